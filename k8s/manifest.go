package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	jsonpatchapply "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// ObjectResult is what InjectManifests did to one workload.
type ObjectResult struct {
	// Kind and Name identify the object; Doc is its 0-based position in the stream.
	Kind, Name string
	Doc        int
	Result
}

// templatePaths maps a workload's group and kind to the JSON path of its pod template.
// A Pod is its own template: its metadata and spec have the template's shape.
var templatePaths = map[string][]string{
	"/Pod":             nil,
	"apps/Deployment":  {"spec", "template"},
	"apps/StatefulSet": {"spec", "template"},
	"apps/DaemonSet":   {"spec", "template"},
	"apps/ReplicaSet":  {"spec", "template"},
	"batch/Job":        {"spec", "template"},
	"batch/CronJob":    {"spec", "jobTemplate", "spec", "template"},
}

// InjectManifests copies a stream of YAML documents from r to w with the sidecar added to the
// pod template of every workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
// CronJob, also inside a v1 List). Every other document is written back byte for byte, and so
// is a workload that needs no change, which makes a second run a no-op. Line breaks are the
// exception: every CR LF and lone CR becomes LF on the way in (see newLineBreakReader).
//
// A changed workload is rewritten from JSON with sorted keys and loses its comments; fields
// this package does not know are kept, because only the changes are applied to the original.
func (c Config) InjectManifests(r io.Reader, w io.Writer) ([]ObjectResult, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(newLineBreakReader(r)))
	var results []ObjectResult
	for doc := 0; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return results, fmt.Errorf("document %d: %w", doc, err)
		}
		out, res, err := c.injectDocument(raw, doc)
		if err != nil {
			return results, fmt.Errorf("document %d: %w", doc, err)
		}
		results = append(results, res...)
		if doc > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return results, err
			}
		}
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		if _, err := w.Write(out); err != nil {
			return results, err
		}
	}
}

// injectDocument returns the document to write: raw itself when nothing changes.
func (c Config) injectDocument(raw []byte, doc int) ([]byte, []ObjectResult, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	var obj any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // integers stay exact through the round trip
	if err := dec.Decode(&obj); err != nil {
		return nil, nil, err
	}
	m, ok := obj.(map[string]any)
	if !ok {
		return raw, nil, nil // empty, comments only, or not an object: not ours to judge
	}
	ops, results, err := c.objectPatch(m, "")
	for i := range results {
		results[i].Doc = doc
	}
	if err != nil || len(ops) == 0 {
		return raw, results, err
	}
	opsJSON, err := json.Marshal(ops)
	if err != nil {
		return nil, nil, err
	}
	patch, err := jsonpatchapply.DecodePatch(opsJSON)
	if err != nil {
		return nil, nil, fmt.Errorf("internal error decoding the injection patch: %w", err)
	}
	patched, err := patch.Apply(js)
	if err != nil {
		return nil, nil, fmt.Errorf("internal error applying the injection patch: %w", err)
	}
	out, err := yaml.JSONToYAML(patched)
	return out, results, err
}

// objectPatch returns the JSON patch operations, under prefix, that inject one object.
func (c Config) objectPatch(obj map[string]any, prefix string) ([]jsonpatch.Operation, []ObjectResult, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	if group == "" && kind == "List" {
		items, _ := obj["items"].([]any)
		var ops []jsonpatch.Operation
		var results []ObjectResult
		for i, it := range items {
			item, ok := it.(map[string]any)
			if !ok {
				continue
			}
			o, r, err := c.objectPatch(item, fmt.Sprintf("%s/items/%d", prefix, i))
			if err != nil {
				return nil, nil, fmt.Errorf("list item %d: %w", i, err)
			}
			ops, results = append(ops, o...), append(results, r...)
		}
		return ops, results, nil
	}
	path, ok := templatePaths[group+"/"+kind]
	if !ok {
		return nil, nil, nil
	}
	name := ""
	if meta, ok := obj["metadata"].(map[string]any); ok {
		name, _ = meta["name"].(string)
	}
	node := any(obj)
	pointer := prefix
	for _, key := range path {
		next, ok := node.(map[string]any)[key].(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s %q has no %s; nothing to inject into", kind, name, strings.Join(path, "."))
		}
		node, pointer = next, pointer+"/"+key
	}
	templateJSON, err := json.Marshal(node)
	if err != nil {
		return nil, nil, err
	}
	var tmpl corev1.PodTemplateSpec
	if err := json.Unmarshal(templateJSON, &tmpl); err != nil {
		return nil, nil, fmt.Errorf("%s %q: pod template: %w", kind, name, err)
	}
	ops, res, err := c.templatePatch(&tmpl, pointer)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	// The typed template always encodes metadata, so the patch may add into a metadata
	// object that the author never wrote.
	if _, ok := node.(map[string]any)["metadata"].(map[string]any); !ok && len(ops) > 0 {
		ops = append([]jsonpatch.Operation{jsonpatch.NewOperation("add", pointer+"/metadata", map[string]any{})}, ops...)
	}
	return ops, []ObjectResult{{Kind: kind, Name: name, Result: res}}, nil
}

// templatePatch injects into tmpl and returns the JSON patch from the old to the new template,
// its paths under prefix. Diffing two encodings of the typed template, rather than the raw
// input against the typed result, keeps fields that k8s.io/api does not know out of the patch.
func (c Config) templatePatch(tmpl *corev1.PodTemplateSpec, prefix string) ([]jsonpatch.Operation, Result, error) {
	before, err := json.Marshal(tmpl)
	if err != nil {
		return nil, Result{}, err
	}
	res, err := c.InjectPod(&tmpl.ObjectMeta, &tmpl.Spec)
	if err != nil {
		return nil, res, err
	}
	after, err := json.Marshal(tmpl)
	if err != nil {
		return nil, res, err
	}
	ops, err := jsonpatch.CreatePatch(before, after)
	if err != nil {
		return nil, res, fmt.Errorf("internal error diffing the pod: %w", err)
	}
	for i := range ops {
		ops[i].Path = prefix + ops[i].Path
	}
	return ops, res, nil
}

// lineBreakReader turns every line break of YAML (CR LF, lone CR, LF; YAML 1.2 §5.4) into LF.
//
// The document reader splits on LF and drops at most one CR before it, while the YAML parser
// breaks lines at a lone CR too. Without this, a document came out with fewer CRs than it went
// in ("x\r\r\n" became "x\r\n", then "x\n"), so a second run changed it again, and a
// "---" after a lone CR separated documents for the parser but not for the reader. Replacing
// CR by LF changes no YAML value: the parser folds and normalises both alike.
type lineBreakReader struct {
	r       io.Reader
	afterCR bool // the last byte read was a CR, already written as LF: drop an LF after it
}

func newLineBreakReader(r io.Reader) *lineBreakReader { return &lineBreakReader{r: r} }

func (l *lineBreakReader) Read(p []byte) (int, error) {
	for {
		n, err := l.r.Read(p)
		out := p[:0] // rewritten in place: out never overtakes the bytes still to be read
		for _, b := range p[:n] {
			if l.afterCR {
				l.afterCR = false
				if b == '\n' {
					continue
				}
			}
			if b == '\r' {
				b, l.afterCR = '\n', true
			}
			out = append(out, b)
		}
		// A read of a lone LF after a CR leaves nothing; read on rather than return 0, nil.
		if len(out) > 0 || err != nil || n == 0 {
			return len(out), err
		}
	}
}
