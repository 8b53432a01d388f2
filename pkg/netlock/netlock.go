// Package netlock is cr's network lock: an nf_tables table (family inet)
// that drops, on input and output, every packet of a given set of TCP
// connections, so that while a connection has no socket (from the dump
// until restore has repaired it) the peer's packets are dropped rather than
// answered with a reset, and the peer keeps retransmitting.
//
// One table per image, named Prefix + a random id (NewName) that the image
// records (image.Inventory.NetLock), holding only that image's connections:
// chains "input" and "output" (type filter, priority 0), sets "conns4" and
// "conns6" of {address . port . address . port}, both directions of every
// connection, and one lookup rule per chain and family. This is the shape
// of CRIU's nftables lock (criu/netfilter.c). An AF_INET6 connection
// between IPv4-mapped addresses sends IPv4 packets and goes into conns4.
//
// Lock creates the table in one netlink batch (all or nothing; an existing
// table of that name is an error); Unlock deletes it with everything in
// it. The table does not belong to the creating socket (the library cannot
// set NFT_TABLE_F_OWNER, and the lock must outlive the dump): every path
// must call Unlock, and List finds tables left behind (cr check,
// cr network-unlock). Uses github.com/google/nftables; needs CAP_NET_ADMIN.
package netlock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every table cr makes.
const Prefix = "cr-"

// ErrNoLock: Unlock found no table of that name.
var ErrNoLock = errors.New("no such network lock")

// Conn is one TCP connection: the socket's own address and its peer's.
type Conn struct {
	Local, Remote netip.AddrPort
}

// NewName returns a fresh table name: Prefix and 12 random hex digits.
func NewName() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("network lock name: %w", err)
	}
	return Prefix + hex.EncodeToString(b[:]), nil
}

// Registers, as nft uses them for a concatenation: 32-bit registers
// NFT_REG32_00 (8) onwards; NFT_REG_1 (1) names the first 16 bytes.
const (
	reg1     = 1
	reg32_00 = 8
)

// key is the set key of one direction: address . port . address . port,
// each field padded to 4 bytes.
func key(src, dst netip.AddrPort) []byte {
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p), 0, 0} }
	var k []byte
	k = append(k, src.Addr().Unmap().AsSlice()...)
	k = append(k, port(src.Port())...)
	k = append(k, dst.Addr().Unmap().AsSlice()...)
	k = append(k, port(dst.Port())...)
	return k
}

// lookupRule: meta nfproto P, meta l4proto tcp, load the 4-tuple into
// consecutive registers, lookup @set, drop.
func lookupRule(set *nftables.Set, proto byte, alen uint32) []expr.Any {
	saddr, daddr := uint32(12), uint32(16) // struct iphdr
	if proto == unix.NFPROTO_IPV6 {
		saddr, daddr = 8, 24 // struct ipv6hdr
	}
	words := alen / 4
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Payload{DestRegister: reg32_00 + words, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: reg32_00 + words + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Payload{DestRegister: reg32_00 + 2*words + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func table(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
}

// Lock creates table name dropping both directions of every connection in
// conns, on input and output. It fails if the table exists. An empty conns
// makes an empty lock (so that restore can always Unlock).
func Lock(name string, conns []Conn) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("network lock %q: the name must start with %q", name, Prefix)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network lock %s: %w", name, err)
	}
	t := c.CreateTable(table(name))
	accept := nftables.ChainPolicyAccept
	chains := []*nftables.Chain{
		c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}),
		c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept}),
	}
	var elems [2][]nftables.SetElement
	for _, k := range conns {
		v := 0
		if !k.Local.Addr().Unmap().Is4() {
			v = 1
		}
		if k.Local.Addr().Unmap().Is4() != k.Remote.Addr().Unmap().Is4() {
			return fmt.Errorf("network lock %s: connection %v -> %v mixes IPv4 and IPv6", name, k.Local, k.Remote)
		}
		elems[v] = append(elems[v], nftables.SetElement{Key: key(k.Local, k.Remote)}, nftables.SetElement{Key: key(k.Remote, k.Local)})
	}
	for i, fam := range []struct {
		set   string
		addr  nftables.SetDatatype
		proto byte
		alen  uint32
	}{
		{"conns4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, 4},
		{"conns6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, 16},
	} {
		kt, err := nftables.ConcatSetType(fam.addr, nftables.TypeInetService, fam.addr, nftables.TypeInetService)
		if err != nil {
			return fmt.Errorf("network lock %s: %w", name, err)
		}
		set := &nftables.Set{Table: t, Name: fam.set, KeyType: kt, Concatenation: true}
		if err := c.AddSet(set, elems[i]); err != nil {
			return fmt.Errorf("network lock %s: set %s: %w", name, fam.set, err)
		}
		for _, ch := range chains {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: lookupRule(set, fam.proto, fam.alen)})
		}
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network lock %s: a table of that name exists already (cr network-unlock removes a stale one): %w", name, err)
		}
		return fmt.Errorf("network lock %s: create table: %w", name, err)
	}
	return nil
}

// Unlock deletes table name and everything in it. A missing table gives an
// error wrapping ErrNoLock.
func Unlock(name string) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("network lock %q: not a cr table (the name must start with %q)", name, Prefix)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network unlock %s: %w", name, err)
	}
	c.DelTable(table(name))
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("network unlock %s: %w", name, ErrNoLock)
		}
		return fmt.Errorf("network unlock %s: delete table: %w", name, err)
	}
	return nil
}

// List returns the names of the inet tables whose name starts with Prefix.
func List() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("list network locks: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list network locks: %w", err)
	}
	var out []string
	for _, t := range ts {
		if strings.HasPrefix(t.Name, Prefix) {
			out = append(out, t.Name)
		}
	}
	return out, nil
}
