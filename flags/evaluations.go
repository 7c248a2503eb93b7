package flags

// Evaluations returns how many flag evaluations gave each result (a reason such as
// "STATIC", or an error code such as "FLAG_NOT_FOUND") since f was created, over both
// paths, OFREP and edge pinning: the counts of ctxprop_flags_evaluations_total summed over
// "via". Results never given are absent. It reads atomics: safe for concurrent use, never
// blocks. The web page's flag chart (webui.History) samples it.
func (f *Flags) Evaluations() map[string]uint64 {
	out := make(map[string]uint64)
	for via := range viaCount {
		for i, o := range outcomes {
			if n := f.counters.evaluations[via][i].Load(); n > 0 {
				out[o] += n
			}
		}
	}
	return out
}
