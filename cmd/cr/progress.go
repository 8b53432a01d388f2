package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cr-tools/cr/pkg/dump"
	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/restore"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// barDelay: work shorter than this draws no progress line.
const barDelay = 500 * time.Millisecond

// meter follows the typed events of dump.Run or restore.Run (the same
// stream a Go program gets from Options.Events). It draws the progress
// line (pages done/total, MB/s, ETA) when stderr is a terminal, writes
// plain progress lines at -v3 and up instead, and keeps the time each
// phase was reached for --display-stats.
//
// The line is github.com/schollz/progressbar/v3 (docs/API.md says why).
type meter struct {
	what  string    // "dump" or "restore"
	bar   bool      // draw the line (stderr is a terminal, below -v3)
	log   io.Writer // plain lines (-v3 and up), or nil
	out   io.Writer // where the line goes (stderr)
	pb    *progressbar.ProgressBar
	gate  *gate     // the bar's writer
	shown time.Time // last plain progress line
	// phases lists each phase once, with the time it was first reached.
	phases []phaseTime
	// first and last page event: for the copy rate.
	firstPages, lastPages time.Duration
	done, total           uint64
}

type phaseTime struct {
	name string
	at   time.Duration
}

func newMeter(what string) *meter {
	m := &meter{what: what, out: os.Stderr, log: progress()}
	m.bar = m.log == nil && logLevel >= 1 && term.IsTerminal(int(os.Stderr.Fd()))
	return m
}

func (m *meter) dumpEvent(e dump.Event) {
	m.event(e.Phase.String(), e.Phase == dump.Pages, e.Done, e.Total, e.Elapsed)
}

func (m *meter) restoreEvent(e restore.Event) {
	m.event(e.Phase.String(), e.Phase == restore.Memory, e.Done, e.Total, e.Elapsed)
}

// event takes one event: pages says it is a count (dump.Pages,
// restore.Memory), done and total are pages.
func (m *meter) event(phase string, pages bool, done, total uint64, at time.Duration) {
	if len(m.phases) == 0 || m.phases[len(m.phases)-1].name != phase {
		m.phases = append(m.phases, phaseTime{phase, at})
		if !pages {
			m.finish()
			if m.log != nil {
				fmt.Fprintf(m.log, "%s: %s after %v\n", m.what, phase, at.Round(time.Microsecond))
			}
		}
	}
	if !pages {
		return
	}
	if m.firstPages == 0 {
		m.firstPages = at
	}
	m.lastPages, m.done, m.total = at, done, total
	switch {
	case m.log != nil:
		if time.Since(m.shown) >= time.Second || done == total {
			m.shown = time.Now()
			fmt.Fprintln(m.log, m.line())
		}
	case m.bar && m.pb == nil && done < total:
		// Made at the first page event so that its rate and ETA count
		// from there; its writes are dropped until barDelay has passed.
		m.gate = &gate{w: m.out}
		m.pb = progressbar.NewOptions64(int64(total)*image.PageSize,
			progressbar.OptionSetWriter(m.gate),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetWidth(20),
			progressbar.OptionSetDescription(m.pagesText()))
		m.pb.Set64(int64(done) * image.PageSize)
	case m.pb != nil:
		m.gate.open = at >= barDelay
		m.pb.Describe(m.pagesText())
		m.pb.Set64(int64(done) * image.PageSize)
	}
}

func (m *meter) pagesText() string {
	return fmt.Sprintf("%s: pages %d/%d", m.what, m.done, m.total)
}

// line is a plain progress line: pages done/total, MB/s, ETA.
func (m *meter) line() string {
	s := m.pagesText()
	if m.total > 0 {
		s += fmt.Sprintf(" (%d%%)", m.done*100/m.total)
	}
	d := m.lastPages - m.firstPages
	if d <= 0 || m.done == 0 {
		return s
	}
	bps := float64(m.done*image.PageSize) / d.Seconds()
	s += fmt.Sprintf(", %.1f MB/s", bps/1e6)
	if m.done < m.total {
		eta := time.Duration(float64((m.total-m.done)*image.PageSize) / bps * float64(time.Second))
		s += fmt.Sprintf(", ETA %v", eta.Round(100*time.Millisecond))
	}
	return s
}

// gate passes writes to w once open, and drops them before.
type gate struct {
	w    io.Writer
	open bool
}

func (g *gate) Write(b []byte) (int, error) {
	if !g.open {
		return len(b), nil
	}
	return g.w.Write(b)
}

// finish removes the progress line, if drawn.
func (m *meter) finish() {
	if m.pb != nil {
		m.pb.Finish()
		m.pb = nil
	}
}

// printPhases is the part of --display-stats drawn from the events: when
// each phase was reached, and the rate of the page copy.
func (m *meter) printPhases(w io.Writer) {
	fmt.Fprintf(w, "  phases (time since the start):\n")
	for _, p := range m.phases {
		fmt.Fprintf(w, "    %-20s %v\n", p.name, ms(p.at))
	}
	if m.total > 0 {
		fmt.Fprintf(w, "  pages copied           %d of %d, %s\n", m.done, m.total, rate(int64(m.done)*image.PageSize, m.lastPages-m.firstPages))
	}
}
