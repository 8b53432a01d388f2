package main

import (
	"strings"
	"testing"

	"github.com/cr-tools/cr/internal/cpu"
	"github.com/stretchr/testify/require"
)

// TestCLICheckCPU: cr check shows this machine's XSAVE components with
// their offsets (from CPUID leaf 0xd) and the feature flags a restoring
// machine needs.
func TestCLICheckCPU(t *testing.T) {
	o, _, _ := cr(t, "check")
	l, err := cpu.HostLayout()
	require.NoError(t, err)
	require.Contains(t, o, "xsave components (offset+size): "+cpu.DescribeComponents(l.Components))
	require.Contains(t, o, "avx 576+256")
	require.Contains(t, o, "cpu features a restoring machine needs: "+strings.Join(cpu.FeatureNames(cpu.HostLeaves()), " "))
	require.Contains(t, o, " sse2 ")
}
