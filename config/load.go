package config

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// EnvPrefix starts the name of every environment override: CTXPROP_<BLOCK>_<ATTRIBUTE>,
// upper-case, such as CTXPROP_ADMIN_ADDRESS or CTXPROP_STORE_COMMIT_WINDOW. The prefix
// belongs to the settings: any other variable that starts with it is an error (see
// ApplyEnv), as an unknown attribute in the file is.
const EnvPrefix = "CTXPROP_"

// notSetting reports the variables that start with EnvPrefix without being settings, which
// ApplyEnv accepts. Keep this short; tests and benchmarks name their own variables without
// the prefix.
func notSetting(name, value string) bool {
	switch name {
	case "CTXPROP_ADMIN_ADDR": // the admin API URL `sidecar ctl` dials (cmd/sidecar/ctl.go), run in the same container
		return true
	}
	return serviceLink(name, value)
}

// serviceLinkName matches the names of the variables Kubernetes sets in every container for
// each Service of the namespace that has a cluster IP (enableServiceLinks, on by default):
// a Service named "ctxprop-ui" gives CTXPROP_UI_SERVICE_HOST, CTXPROP_UI_SERVICE_PORT,
// CTXPROP_UI_SERVICE_PORT_<PORT NAME>, CTXPROP_UI_PORT and CTXPROP_UI_PORT_<N>_<PROTOCOL>
// with _PROTO, _PORT and _ADDR. The service name is matched shortest first, so that
// CTXPROP_UI_PORT_80_TCP_PORT reads as the port of "ctxprop-ui".
var serviceLinkName = regexp.MustCompile(`^CTXPROP(?:_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_(PROTO|PORT|ADDR))?)?)$`)

// serviceLink reports a variable Kubernetes set for a Service whose name starts with
// "ctxprop-": a sidecar must not refuse to start because such a Service exists. The value
// must have the shape Kubernetes gives it too, so CTXPROP_INBOUND_PORT=7401 is still refused.
func serviceLink(name, value string) bool {
	m := serviceLinkName.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	isPort := func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n > 0 && n <= 65535 }
	isProto := func(v string) bool { return v == "tcp" || v == "udp" || v == "sctp" }
	switch kind, field := m[1], m[2]; {
	case kind == "SERVICE_HOST" || field == "ADDR":
		return net.ParseIP(value) != nil
	case strings.HasPrefix(kind, "SERVICE_PORT") || field == "PORT":
		return isPort(value)
	case field == "PROTO":
		return isProto(value)
	default: // _PORT and _PORT_<N>_<PROTOCOL>: "tcp://10.0.0.11:6379"
		proto, addr, _ := strings.Cut(value, "://")
		host, port, err := net.SplitHostPort(addr)
		return err == nil && isProto(proto) && net.ParseIP(host) != nil && isPort(port)
	}
}

// Load reads the HCL file at path over DefaultConfig, applies the process environment's
// overrides, and validates the result. An empty path loads only defaults and environment.
// A file whose name ends in ".json" is read as HCL's JSON syntax.
func Load(path string) (Config, error) {
	c := DefaultConfig()
	if path != "" {
		src, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read config: %w; pass the path of an existing file with -config", err)
		}
		if err := c.decode(src, path); err != nil {
			return Config{}, err
		}
	}
	if err := c.ApplyEnv(os.Environ()); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Parse decodes src, named filename in errors, over DefaultConfig and validates the
// result. Unlike Load it ignores the environment.
func Parse(src []byte, filename string) (Config, error) {
	c := DefaultConfig()
	if err := c.decode(src, filename); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// decode sets the fields named in src, leaving the others as they are.
func (c *Config) decode(src []byte, filename string) error {
	parser := hclparse.NewParser()
	var (
		file  *hcl.File
		diags hcl.Diagnostics
	)
	if strings.HasSuffix(filename, ".json") {
		file, diags = parser.ParseJSON(src, filename)
	} else {
		file, diags = parser.ParseHCL(src, filename)
	}
	if diags.HasErrors() {
		return diagError(diags)
	}

	settings := c.settings()
	attrsOf := make(map[string][]hcl.AttributeSchema)
	for _, s := range settings {
		attrsOf[s.block] = append(attrsOf[s.block], hcl.AttributeSchema{Name: s.attr})
	}
	top := &hcl.BodySchema{}
	for _, b := range blocks {
		top.Blocks = append(top.Blocks, hcl.BlockHeaderSchema{Type: b})
	}
	content, diags := file.Body.Content(top)

	seen := make(map[string]*hcl.Block)
	attrs := make(map[string]*hcl.Attribute) // by "block.attr"
	for _, b := range content.Blocks {
		if first, dup := seen[b.Type]; dup {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", b.Type),
				Detail:   fmt.Sprintf("A %s block is already at %s; merge the two into one.", b.Type, lineOf(first.DefRange)),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		seen[b.Type] = b
		blockContent, more := b.Body.Content(&hcl.BodySchema{Attributes: attrsOf[b.Type]})
		for i := range more {
			if more[i].Summary == "Unsupported argument" || more[i].Summary == "Unsupported block type" {
				more[i].Summary += " in " + b.Type + " block"
			}
		}
		diags = append(diags, more...)
		for name, a := range blockContent.Attributes {
			attrs[b.Type+"."+name] = a
		}
	}
	if diags.HasErrors() {
		return diagError(diags)
	}

	for _, s := range settings {
		a, ok := attrs[s.path()]
		if !ok {
			continue
		}
		v, more := a.Expr.Value(nil)
		diags = append(diags, more...)
		if more.HasErrors() || v.IsNull() { // null means "keep the default", as in Terraform
			continue
		}
		if err := s.setCty(v); err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid value for " + s.path(),
				Detail:   err.Error() + ".",
				Subject:  a.Expr.Range().Ptr(),
			})
			continue
		}
		c.setOrigin(s.path(), lineOf(a.Expr.Range()))
	}
	if diags.HasErrors() {
		return diagError(diags)
	}
	return nil
}

// ApplyEnv overrides every setting whose variable CTXPROP_<BLOCK>_<ATTRIBUTE> is in environ,
// a list of "NAME=value" as os.Environ returns; of a name given twice the last counts, as
// in exec.Cmd's Env. Lists are comma-separated ("10.0.0.7:7403,10.0.0.8:7403"); an empty
// variable sets an empty list or string. Every other variable that starts with CTXPROP_
// is an error naming it and the setting it was probably meant to be, except
// CTXPROP_ADMIN_ADDR, which `sidecar ctl` reads, and those Kubernetes sets for a Service
// named ctxprop-…: a misspelt override left unnoticed would leave the setting at its
// default. It does not validate.
func (c *Config) ApplyEnv(environ []string) error {
	env := make(map[string]string)
	for _, kv := range environ {
		if name, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, EnvPrefix) {
			env[name] = v
		}
	}
	var errs []error
	known := c.settings()
	for _, s := range known {
		name := EnvVar(s.block, s.attr)
		v, ok := env[name]
		if !ok {
			continue
		}
		delete(env, name)
		if err := s.setString(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			continue
		}
		c.setOrigin(s.path(), name)
	}
	unknown := make([]string, 0, len(env))
	for name := range env {
		if !notSetting(name, env[name]) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		// The value is left out: it may be a secret meant for something else.
		if guess, ok := closest(name, known); ok {
			errs = append(errs, fmt.Errorf("%s is not a ctxprop setting; did you mean %s? (config attributes are %s<BLOCK>_<ATTRIBUTE>)", name, EnvVar(guess.block, guess.attr), EnvPrefix))
		} else {
			errs = append(errs, fmt.Errorf("%s is not a ctxprop setting; unset it (config attributes are %s<BLOCK>_<ATTRIBUTE>, as in config.hcl)", name, EnvPrefix))
		}
	}
	return errors.Join(errs...)
}

// closest returns the setting in known whose variable is nearest to name, ignoring case and
// the common prefix; ok is false when none is near enough to be a plausible misspelling:
// within two edits, or half the length of what follows the prefix (a missing block name,
// "CTXPROP_COMMIT_WINDOW"). known is in the order of settings, so a tie is stable.
func closest(name string, known []setting) (best setting, ok bool) {
	rest := strings.ToUpper(strings.TrimPrefix(name, EnvPrefix))
	bestDist := max(2, len(rest)/2) + 1
	for _, k := range known {
		if d := editDistance(rest, strings.TrimPrefix(EnvVar(k.block, k.attr), EnvPrefix)); d < bestDist {
			best, bestDist, ok = k, d, true
		}
	}
	return best, ok
}

// LookupEnv reports whether name is the variable of a setting (CTXPROP_<BLOCK>_<ATTRIBUTE>).
// When it is not, block and attr name the setting it was probably meant to be, or are
// empty when none is close. The Kubernetes injector uses it to refuse a misspelt
// ctxprop.io/config-<block>-<attr> annotation before the pod starts.
func LookupEnv(name string) (ok bool, block, attr string) {
	c := DefaultConfig()
	known := c.settings()
	for _, s := range known {
		if EnvVar(s.block, s.attr) == name {
			return true, "", ""
		}
	}
	if s, near := closest(name, known); near {
		return false, s.block, s.attr
	}
	return false, "", ""
}

// editDistance is the optimal string alignment distance between a and b: the number of
// byte insertions, deletions, substitutions and swaps of neighbours ("PAHT" for "PATH")
// that turn one into the other.
func editDistance(a, b string) int {
	// Three rows of the dynamic programming table: two back for the swap.
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// EnvVar returns the name of the environment variable that overrides block.attr.
func EnvVar(block, attr string) string {
	return EnvPrefix + strings.ToUpper(block) + "_" + strings.ToUpper(attr)
}

// setString parses an environment value into the setting's field.
func (s setting) setString(v string) error {
	switch p := s.ptr.(type) {
	case *string:
		*p = v
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("not a boolean; want true or false")
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New("not an integer")
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return errors.New("not a number")
		}
		*p = f
	case *time.Duration:
		d, err := parseDuration(v)
		if err != nil {
			return err
		}
		*p = d
	case *[]string:
		list := []string{}
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				list = append(list, e)
			}
		}
		*p = list
	case *[]int:
		list := []int{}
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			n, err := strconv.Atoi(e)
			if err != nil {
				return fmt.Errorf("%q is not an integer; want a comma-separated list such as 8080,9090", e)
			}
			list = append(list, n)
		}
		*p = list
	case *map[string]string:
		m := map[string]string{}
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			k, val, ok := strings.Cut(e, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return fmt.Errorf("%q is not name=value; want a comma-separated list such as plan=X-Plan,tier=X-Tier", e)
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
		*p = m
	default:
		panic(fmt.Sprintf("config: setting %s has unsupported type %T", s.path(), s.ptr))
	}
	return nil
}

// setCty converts an HCL value into the setting's field. HCL's own conversions apply, so
// a number is accepted where a string is wanted, as everywhere in HCL.
func (s setting) setCty(v cty.Value) error {
	if !v.IsWhollyKnown() {
		return errors.New("the value is not known until run time; use a literal")
	}
	switch p := s.ptr.(type) {
	case *string:
		str, err := convert.Convert(v, cty.String)
		if err != nil {
			return fmt.Errorf("want a string, got %s", v.Type().FriendlyName())
		}
		*p = str.AsString()
	case *bool:
		b, err := convert.Convert(v, cty.Bool)
		if err != nil {
			return fmt.Errorf("want true or false, got %s", v.Type().FriendlyName())
		}
		*p = b.True()
	case *int:
		n, err := ctyInt(v)
		if err != nil {
			return err
		}
		*p = int(n)
	case *int64:
		n, err := ctyInt(v)
		if err != nil {
			return err
		}
		*p = n
	case *float64:
		n, err := convert.Convert(v, cty.Number)
		if err != nil {
			return fmt.Errorf("want a number, got %s", v.Type().FriendlyName())
		}
		*p, _ = n.AsBigFloat().Float64()
	case *time.Duration:
		str, err := convert.Convert(v, cty.String)
		if err != nil {
			return fmt.Errorf("want a Go duration string such as \"100ms\", got %s", v.Type().FriendlyName())
		}
		d, err := parseDuration(str.AsString())
		if err != nil {
			return err
		}
		*p = d
	case *[]string:
		list, err := convert.Convert(v, cty.List(cty.String))
		if err != nil {
			return fmt.Errorf("want a list of strings such as [\"a\", \"b\"], got %s", v.Type().FriendlyName())
		}
		out := []string{}
		for it := list.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() {
				return errors.New("the list holds null; want strings only")
			}
			out = append(out, e.AsString())
		}
		*p = out
	case *[]int:
		list, err := convert.Convert(v, cty.List(cty.Number))
		if err != nil {
			return fmt.Errorf("want a list of numbers such as [8080, 9090], got %s", v.Type().FriendlyName())
		}
		out := []int{}
		for it := list.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() {
				return errors.New("the list holds null; want numbers only")
			}
			n, err := ctyInt(e)
			if err != nil {
				return err
			}
			out = append(out, int(n))
		}
		*p = out
	case *map[string]string:
		m, err := convert.Convert(v, cty.Map(cty.String))
		if err != nil {
			return fmt.Errorf("want a map of strings such as { plan = \"X-Plan\" }, got %s", v.Type().FriendlyName())
		}
		out := map[string]string{}
		for it := m.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if e.IsNull() {
				return fmt.Errorf("%s is null; want a string", k.AsString())
			}
			out[k.AsString()] = e.AsString()
		}
		*p = out
	default:
		panic(fmt.Sprintf("config: setting %s has unsupported type %T", s.path(), s.ptr))
	}
	return nil
}

func ctyInt(v cty.Value) (int64, error) {
	n, err := convert.Convert(v, cty.Number)
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %s", v.Type().FriendlyName())
	}
	f := n.AsBigFloat()
	if !f.IsInt() {
		return 0, fmt.Errorf("want an integer, got %s", f.Text('g', -1))
	}
	i, acc := f.Int64()
	if acc != big.Exact || i != int64(int(i)) {
		return 0, fmt.Errorf("%s is out of range", f.Text('g', -1))
	}
	return i, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a Go duration; want a number with a unit such as \"100ms\", \"30s\", \"24h\", or \"0\"", s)
	}
	return d, nil
}

// lineOf renders the start of r as "file:line".
func lineOf(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }

// diagError turns HCL diagnostics into one error, a line per problem, each starting with
// file:line:column.
func diagError(diags hcl.Diagnostics) error {
	var errs []error
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil {
			msg = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}
