// Package config loads the sidecar's configuration (SPEC §9): an HCL file such as the
// config.hcl shipped at the repository root, decoded on top of DefaultConfig, then
// CTXPROP_<BLOCK>_<ATTRIBUTE> environment overrides, then Validate.
//
// Every block and attribute is optional; an unknown one is an error, because a misspelt
// setting silently left at its default is worse than a refusal to start. So is an unknown
// variable starting with CTXPROP_ (see ApplyEnv for the two exceptions). Durations are Go
// duration strings ("100ms", "24h"; "0" where zero means none). Relative paths, such as the
// default store.path "data/ctxprop.db", are relative to the working directory of the
// process, not to the config file, as Kubernetes volume mounts and the demo expect.
//
// Errors name the file and line of the offending attribute, or the environment variable
// that set it, and say what a valid value looks like.
package config
