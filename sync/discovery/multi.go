package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// Source is the method every peer source here provides. The sync layer declares its own
// identical interface; this copy exists so Multi can hold any source.
type Source interface {
	Peers(ctx context.Context) ([]string, error)
}

// opener is a source with background work (XDS).
type opener interface {
	Open(ctx context.Context) error
}

// Multi is the union of several sources. Its zero value has no sources and no peers.
type Multi struct {
	// Sources are asked concurrently on every call to Peers. Set them before Open and
	// do not change them after.
	Sources []Source
}

// Peers asks every source at once and returns the union of their answers, deduplicated
// and sorted. A source that fails does not hide the others' peers: the error returned
// joins the failures, and the list is still worth using whenever it is not empty.
func (m *Multi) Peers(ctx context.Context) ([]string, error) {
	type answer struct {
		peers []string
		err   error
	}
	answers := make([]answer, len(m.Sources))
	var wg sync.WaitGroup
	for i, s := range m.Sources {
		wg.Go(func() {
			p, err := s.Peers(ctx)
			answers[i] = answer{p, err}
		})
	}
	wg.Wait()

	var peers []string
	var errs []error
	for i, a := range answers {
		peers = append(peers, a.peers...)
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name(m.Sources[i]), a.err))
		}
	}
	slices.Sort(peers)
	return slices.Compact(peers), errors.Join(errs...)
}

// Open opens every source that has background work, in order. If one fails, the ones
// already opened are closed again and the error names the source.
func (m *Multi) Open(ctx context.Context) error {
	for i, s := range m.Sources {
		o, ok := s.(opener)
		if !ok {
			continue
		}
		if err := o.Open(ctx); err != nil {
			err = fmt.Errorf("open %s: %w", name(s), err)
			return errors.Join(err, closeAll(m.Sources[:i]))
		}
	}
	return nil
}

// Close closes every source that is an io.Closer and joins their errors. It is safe to
// call twice when the sources' Close is, as all of this package's are.
func (m *Multi) Close() error {
	return closeAll(m.Sources)
}

func closeAll(sources []Source) error {
	var errs []error
	for _, s := range sources {
		if c, ok := s.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", name(s), err))
			}
		}
	}
	return errors.Join(errs...)
}

// name labels a source in errors: its String method if it has one.
func name(s Source) string {
	if st, ok := s.(fmt.Stringer); ok {
		return st.String()
	}
	return fmt.Sprintf("%T", s)
}
