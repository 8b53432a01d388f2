package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/cr-tools/cr/pkg/netlock"
)

// cmdNetworkUnlock removes the network lock of an image that will not be
// restored (CRIU has none; its lock goes with `criu restore` or by hand):
// the nf_tables table the dump left to keep the image's TCP connections
// quiet (image.Inventory.NetLock). The peers then get resets.
func cmdNetworkUnlock(args []string) (int, error) {
	c := newCommand("network-unlock", "cr network-unlock -i DIR",
		`Remove the network lock (an nf_tables table dropping the packets of the
image's TCP connections) that a dump left for an image that will not be
restored: its connections' peers then get resets instead of silence.`,
		"cr network-unlock -i /var/tmp/img")
	dir := c.fs.String("i", "", "image directory `DIR` whose network lock to remove (required)")
	c.alias("i", "D", "images-dir")
	c.logFlags()
	if err := c.parse(args, false); err != nil {
		return 0, err
	}
	if *dir == "" {
		return 0, &usageError{"network-unlock: -i DIR is required"}
	}
	img, err := image.Load(*dir)
	if err != nil {
		return 0, err
	}
	name := img.Inventory.NetLock
	if name == "" {
		fmt.Printf("%s has no network lock\n", *dir)
		return 0, nil
	}
	if err := netlock.Unlock(name); errors.Is(err, netlock.ErrNoLock) {
		fmt.Printf("network lock %s of %s was removed already\n", name, *dir)
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	fmt.Printf("network lock %s of %s removed\n", name, *dir)
	return 0, nil
}

// listLocks prints cr's network lock tables (netlock.List) with the image
// of dirs that names each, if any: a table no image names is one left by
// an image that is gone, and `nft delete table inet NAME` or cr
// network-unlock on its image removes it. An error is a failure to read
// nf_tables.
func listLocks(dirs []string) error {
	names, err := netlock.List()
	if err != nil {
		return err
	}
	owner := map[string]string{}
	for _, d := range dirs {
		c, err := image.Load(d)
		if err != nil {
			fmt.Printf("  note %s: %v\n", d, err)
			continue
		}
		if n := c.Inventory.NetLock; n != "" {
			owner[n] = d
		}
	}
	for _, n := range names {
		if d, ok := owner[n]; ok {
			fmt.Printf("  lock table inet %s: held for the image %s (removed by its restore, or cr network-unlock -i %s)\n", n, d, d)
		} else {
			fmt.Printf("  lock table inet %s: no image given names it (left by an image that is gone?)\n", n)
		}
	}
	for n, d := range owner {
		if !contains(names, n) {
			fmt.Printf("  note: the network lock %s of %s is gone (its connections are no longer held)\n", n, d)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// listFlag collects the values of a repeatable flag.
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, ",") }

func (f *listFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}
