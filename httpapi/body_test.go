package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll must return what io.ReadAll returns, whatever the declared length and however
// the reader hands out its bytes, and allocate once for a body of its declared length.
func TestReadAll_SameAsIOReadAll(t *testing.T) {
	errBroken := errors.New("broken")
	readers := map[string]func(string) io.Reader{
		"whole":       func(s string) io.Reader { return strings.NewReader(s) },
		"one byte":    func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"data at EOF": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
		"error after": func(s string) io.Reader { return io.MultiReader(strings.NewReader(s), iotest.ErrReader(errBroken)) },
	}
	for _, body := range []string{"", `{"by":1}`, strings.Repeat("x", 511), strings.Repeat("y", 600)} {
		for _, size := range []int64{-1, 0, int64(len(body)) - 1, int64(len(body)), int64(len(body)) + 1, 100} {
			for name, mk := range readers {
				t.Run(fmt.Sprintf("%d bytes/declared %d/%s", len(body), size, name), func(t *testing.T) {
					want, wantErr := io.ReadAll(mk(body))
					got, gotErr := readAll(mk(body), size)
					if !bytes.Equal(got, want) || !errors.Is(gotErr, wantErr) && gotErr != wantErr {
						t.Errorf("readAll = %q, %v; io.ReadAll = %q, %v", got, gotErr, want, wantErr)
					}
				})
			}
		}
	}
	body := `{"by":1}`
	rd := strings.NewReader(body)
	if got := testing.AllocsPerRun(100, func() {
		rd.Reset(body)
		if _, err := readAll(rd, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}); got > 1 {
		t.Errorf("readAll of %d declared bytes: %.0f allocations, want 1", len(body), got)
	}
}
