package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// command is one subcommand: its flags and what `cr CMD -h` prints (a
// synopsis, a paragraph, every option with its default, examples). A new
// option is one line: c.fs.Bool / c.fs.String / c.fs.Var with a usage text
// whose `BACKQUOTED` word names its argument (shown in capitals, as a
// placeholder, unless it lists the literal values: `nftables|skip`).
type command struct {
	name     string
	synopsis string
	about    string
	examples []string
	fs       *flag.FlagSet
	aliases  map[string][]string // flag name -> other names for it
	isAlias  map[string]bool
}

func newCommand(name, synopsis, about string, examples ...string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &command{name: name, synopsis: synopsis, about: about, examples: examples, fs: fs,
		aliases: map[string][]string{}, isAlias: map[string]bool{}}
}

// alias makes each of names another spelling of the flag name.
func (c *command) alias(name string, names ...string) {
	f := c.fs.Lookup(name)
	for _, a := range names {
		c.fs.Var(f.Value, a, f.Usage)
		c.isAlias[a] = true
	}
	c.aliases[name] = append(c.aliases[name], names...)
}

// logFlags adds the log options every command has: -v[N] and --log-file.
func (c *command) logFlags() {
	c.fs.Var((*levelFlag)(&logLevel), "v", "verbosity `N`: -v0 silent (exit status only), -v1 the one-line error, -v2 also warnings, -v3 also progress, -v4 also the whole error chain; -v alone is -v4")
	c.fs.StringVar(&logFile, "log-file", "", "write the log (warnings, progress, the error with its chain) to `FILE` instead of stderr; the one-line error still goes to stderr")
}

// parse parses args (after normalizeArgs); -h prints the help to stdout and
// returns flag.ErrHelp; stray arguments are a usage error unless the
// command takes some (then they are in c.fs.Args()).
func (c *command) parse(args []string, positional bool) error {
	if err := c.fs.Parse(normalizeArgs(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(os.Stdout)
			return err
		}
		return &usageError{fmt.Sprintf("%s: %v (see cr %s -h)", c.name, err, c.name)}
	}
	if !positional && c.fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("%s: unexpected argument %q (see cr %s -h)", c.name, strings.Join(c.fs.Args(), " "), c.name)}
	}
	return openLog()
}

// set reports whether the flag name was given on the command line.
func (c *command) set(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// spelling is how -h shows a flag: -x for one letter, --long otherwise.
func spelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// usage prints the synopsis, the paragraph, every option with its
// argument and default, and the examples.
func (c *command) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", c.synopsis, c.about)
	var flags []*flag.Flag
	c.fs.VisitAll(func(f *flag.Flag) {
		if !c.isAlias[f.Name] {
			flags = append(flags, f)
		}
	})
	// One-letter options first, then the long ones, each alphabetically.
	sort.SliceStable(flags, func(i, j int) bool {
		a, b := flags[i].Name, flags[j].Name
		if (len(a) == 1) != (len(b) == 1) {
			return len(a) == 1
		}
		return a < b
	})
	if len(flags) > 0 {
		fmt.Fprintf(w, "\nOptions:\n")
	}
	for _, f := range flags {
		arg, text := flag.UnquoteUsage(f)
		if _, ok := f.Value.(*levelFlag); ok {
			arg = ""
		} else if strings.Contains(arg, "|") { // literal choices: nftables|skip
			arg = " " + arg
		} else if arg != "" {
			arg = " " + strings.ToUpper(arg)
		}
		names := []string{spelling(f.Name) + arg}
		if f.Name == "v" {
			names[0] = "-v, -vN"
		}
		for _, a := range c.aliases[f.Name] {
			names = append(names, spelling(a)+arg)
		}
		fmt.Fprintf(w, "  %s\n", strings.Join(names, ", "))
		if strings.HasSuffix(text, "(required)") {
			fmt.Fprintf(w, "        %s\n", text)
		} else {
			fmt.Fprintf(w, "        %s (default: %s)\n", text, defaultText(f))
		}
	}
	if len(c.examples) > 0 {
		fmt.Fprintf(w, "\nExample%s:\n", map[bool]string{true: "s"}[len(c.examples) > 1])
		for _, e := range c.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

func defaultText(f *flag.Flag) string {
	switch f.DefValue {
	case "", "[]":
		return "none"
	}
	return f.DefValue
}

// Log state shared by every command (set by logFlags / parse).
var (
	logLevel = 2 // -vN
	logFile  string
	logOut   io.Writer = os.Stderr // where the log goes: stderr or the --log-file
	logClose func()
)

// levelFlag is -v: alone it means 4; -vN and -v=N set N (normalizeArgs
// rewrites -vN, which the flag package would not parse).
type levelFlag int

func (l *levelFlag) String() string {
	if l == nil {
		return "2"
	}
	return strconv.Itoa(int(*l))
}

func (l *levelFlag) Set(s string) error {
	if s == "true" {
		*l = 4
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 4 {
		return fmt.Errorf("verbosity %q: want 0 to 4", s)
	}
	*l = levelFlag(n)
	return nil
}

func (l *levelFlag) IsBoolFlag() bool { return true }

// normalizeArgs rewrites CRIU's verbosity spellings, which Go's flag
// package does not parse: -v0 .. -v4 (and --v4) become -v=N, -vv .. -vvvv
// become -v=4. Arguments after "--" are left alone.
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		b := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		switch {
		case a != b && len(b) == 2 && b[0] == 'v' && b[1] >= '0' && b[1] <= '9':
			a = "-v=" + b[1:]
		case a != b && len(b) > 1 && strings.Trim(b, "v") == "":
			a = "-v=4"
		}
		out = append(out, a)
	}
	return out
}

// openLog opens the --log-file, if any.
func openLog() error {
	if logFile == "" || logClose != nil {
		return nil
	}
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open the log file: %w", err)
	}
	logOut = f
	logClose = func() { f.Close() }
	return nil
}

// progress is the writer for progress messages (-v3 and up), nil below.
func progress() io.Writer {
	if logLevel >= 3 {
		return logOut
	}
	return nil
}

// infof logs at level 3 (progress and information).
func infof(format string, args ...any) {
	if logLevel >= 3 {
		fmt.Fprintf(logOut, format+"\n", args...)
	}
}

// warnf logs at level 2 (warnings).
func warnf(format string, args ...any) {
	if logLevel >= 2 {
		fmt.Fprintf(logOut, "cr: warning: "+format+"\n", args...)
	}
}

// stringsFlag is a repeatable option collecting its values.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }

func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}
