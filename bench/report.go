package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// row is one line of the table.
type row struct {
	ID       string
	Section  string
	Name     string
	Unit     string
	Evident  []measure
	Raw      []measure
	RawName  string
	Peer     []measure
	PeerName string
	// LowerBetter marks latency and memory rows.
	LowerBetter bool
	Target      target
	// Guard: the smoke profile fails when evident/raw falls below 0.5 here.
	Guard bool
	Notes []string
}

// target is what a row is held to; zero fields are not checked.
type target struct {
	Text     string
	MinRaw   float64 // evident/raw median at least this
	MinPeer  float64 // evident/peer median at least this
	Max      float64 // evident median at most this (LowerBetter rows)
	NoBusy   bool    // evident never met SQLITE_BUSY
	NoDups   bool    // evident never wrote a duplicate version
	MaxRatio float64 // evident/raw median at most this (memory growth)
	Extra    func(r *row) (ok bool, why string)
}

func values(ms []measure) []float64 {
	var out []float64
	for _, m := range ms {
		if m.Err == nil && !math.IsNaN(m.Value) {
			out = append(out, m.Value)
		}
	}
	return out
}

// ratios are per-round ratios a[i]/b[i] of rounds where both were measured.
func ratios(a, b []measure) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if a[i].Err == nil && b[i].Err == nil && b[i].Value > 0 {
			out = append(out, a[i].Value/b[i].Value)
		}
	}
	return out
}

func (r *row) ratioRaw() float64  { return median(ratios(r.Evident, r.Raw)) }
func (r *row) ratioPeer() float64 { return median(ratios(r.Evident, r.Peer)) }

func sum(ms []measure, f func(measure) int64) int64 {
	var n int64
	for _, m := range ms {
		n += f(m)
	}
	return n
}

// status says met, missed (with why) or n/a.
func (r *row) status() (string, string) {
	t := r.Target
	if t.Text == "" {
		return "—", ""
	}
	var why []string
	measured := false
	if t.MinRaw > 0 {
		if q := r.ratioRaw(); math.IsNaN(q) {
			why = append(why, "raw not measured")
		} else {
			measured = true
			if q < t.MinRaw {
				why = append(why, fmt.Sprintf("%.2f× raw < %.2g×", q, t.MinRaw))
			}
		}
	}
	unchecked := ""
	if t.MinPeer > 0 && r.PeerName == "" {
		unchecked = "peer not run in this profile"
	}
	if t.MinPeer > 0 && r.PeerName != "" {
		if q := r.ratioPeer(); math.IsNaN(q) {
			why = append(why, r.PeerName+" not measured")
		} else {
			measured = true
			if q < t.MinPeer {
				why = append(why, fmt.Sprintf("%.2f× %s < %.2g×", q, r.PeerName, t.MinPeer))
			}
		}
	}
	if t.MaxRatio > 0 {
		if q := r.ratioRaw(); !math.IsNaN(q) {
			measured = true
			if q > t.MaxRatio {
				why = append(why, fmt.Sprintf("grew %.2f× > %.2g×", q, t.MaxRatio))
			}
		}
	}
	if t.Max > 0 {
		if v := median(values(r.Evident)); !math.IsNaN(v) {
			measured = true
			if v > t.Max {
				why = append(why, fmt.Sprintf("%s > %s", num(v), num(t.Max)))
			}
		}
	}
	if t.NoBusy {
		measured = true
		if n := sum(r.Evident, func(m measure) int64 { return m.Busy }); n > 0 {
			why = append(why, fmt.Sprintf("%d SQLITE_BUSY", n))
		}
	}
	if t.NoDups {
		measured = true
		if n := sum(r.Evident, func(m measure) int64 { return m.Dups }); n > 0 {
			why = append(why, fmt.Sprintf("%d duplicate/missing versions", n))
		}
	}
	if t.Extra != nil {
		measured = true
		if ok, w := t.Extra(r); !ok {
			why = append(why, w)
		}
	}
	if !measured {
		if unchecked != "" {
			why = append(why, unchecked)
		}
		return "n/a", strings.Join(why, "; ")
	}
	if len(why) > 0 {
		return "missed", strings.Join(why, "; ")
	}
	return "met", unchecked
}

func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// cell is "median (min–max)" of the measured rounds, or why there is none.
func cell(ms []measure) string {
	vs := values(ms)
	if len(vs) == 0 {
		for _, m := range ms {
			if m.Err != nil {
				return "error"
			}
		}
		return "—"
	}
	lo, hi := minMax(vs)
	s := num(median(vs))
	if len(vs) > 1 {
		s += " (" + num(lo) + "–" + num(hi) + ")"
	}
	if len(vs) < len(ms) {
		s += fmt.Sprintf(" [%d/%d rounds]", len(vs), len(ms))
	}
	return s
}

func ratioCell(q float64) string {
	if math.IsNaN(q) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", q)
}

func named(name, c string) string {
	if name == "" || c == "—" {
		return c
	}
	return name + ": " + c
}

// details are the counts worth a note: retries, busy, duplicates, errors.
func details(label string, ms []measure) []string {
	var out []string
	if n := sum(ms, func(m measure) int64 { return m.Retries }); n > 0 {
		out = append(out, fmt.Sprintf("%s retries %d", label, n))
	}
	if n := sum(ms, func(m measure) int64 { return m.Busy }); n > 0 {
		out = append(out, fmt.Sprintf("%s SQLITE_BUSY %d", label, n))
	}
	if n := sum(ms, func(m measure) int64 { return m.Dups }); n > 0 {
		out = append(out, fmt.Sprintf("%s duplicate/missing versions %d", label, n))
	}
	if n := sum(ms, func(m measure) int64 { return m.Errors }); n > 0 {
		out = append(out, fmt.Sprintf("%s errors %d", label, n))
	}
	for _, m := range ms {
		if m.Err != nil {
			out = append(out, fmt.Sprintf("%s: %s", label, trim(m.Err.Error(), 200)))
			break
		}
		if m.Note != "" && m.Errors > 0 {
			out = append(out, fmt.Sprintf("%s %s", label, m.Note))
			break
		}
	}
	return out
}

func (r *row) allNotes() []string {
	out := append([]string{}, r.Notes...)
	out = append(out, details("evident", r.Evident)...)
	if r.RawName != "" {
		out = append(out, details(r.RawName, r.Raw)...)
	}
	if r.PeerName != "" {
		out = append(out, details(r.PeerName, r.Peer)...)
	}
	for _, m := range r.Evident {
		if m.Note != "" && m.Errors == 0 {
			out = append(out, m.Note)
			break
		}
	}
	return out
}

// writeTable writes the rows as a Markdown table, one section at a time.
func writeTable(w io.Writer, rows []row) {
	section := ""
	for i := range rows {
		r := &rows[i]
		if r.Section != section {
			if section != "" {
				fmt.Fprintln(w)
			}
			section = r.Section
			fmt.Fprintf(w, "### %s\n\n", section)
			fmt.Fprintln(w, "| scenario | unit | evident | raw | peer | evident/raw | evident/peer | target | status | notes |")
			fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
		}
		st, why := r.status()
		if why != "" {
			st += " (" + why + ")"
		}
		if r.Guard {
			st += " · CI guard"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Name, r.Unit, cell(r.Evident), named(r.RawName, cell(r.Raw)), named(r.PeerName, cell(r.Peer)),
			ratioCell(r.ratioRaw()), ratioCell(r.ratioPeer()), orDash(r.Target.Text), st,
			esc(strings.Join(r.allNotes(), "; ")))
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func esc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
