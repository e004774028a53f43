package rig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// vchanPeerSource is the dom0 libxenvchan peer (see its header comment).
const vchanPeerSource = "qemu/vchanpeer/vchanpeer.c"

// vchanPeerLibs are the static libraries, from the unpacked libxen-dev, the
// peer links against: libxenvchan and what it calls.
var vchanPeerLibs = []string{"-lxenvchan", "-lxenstore", "-lxengnttab", "-lxenevtchn", "-lxentoolcore", "-lxentoollog", "-lpthread"}

// BuildVchanPeer compiles qemu/vchanpeer/vchanpeer.c with the host's gcc
// against Xen's real libxenvchan (headers and static libraries from the
// libxen-dev package unpacked in the rig cache) into a static dom0 binary,
// and returns it. The binary is cached in the rig cache under a hash of the
// source and the compiler command, so gcc runs only when either changes.
// BootDomUs ships it to every tier-B dom0 as /gozen/vchanpeer.
func BuildVchanPeer() ([]byte, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	src, err := os.ReadFile(filepath.Join(repoRoot(), vchanPeerSource))
	if err != nil {
		return nil, err
	}
	x := filepath.Join(Cache(), "x")
	if _, err := os.Stat(filepath.Join(x, "usr", "include", "libxenvchan.h")); err != nil {
		return nil, fmt.Errorf("vchanpeer: libxen-dev not unpacked in the rig cache (run qemu/setup.sh): %w", err)
	}
	args := append([]string{"-O2", "-Wall", "-static", "-I" + filepath.Join(x, "usr", "include"),
		"-x", "c", "-", "-x", "none", "-L" + filepath.Join(x, "usr", "lib", "x86_64-linux-gnu")},
		vchanPeerLibs...)
	h := sha256.New()
	h.Write(src)
	h.Write([]byte(strings.Join(args, "\x00")))
	if v, err := exec.Command("gcc", "-dumpfullversion").Output(); err == nil {
		h.Write(v)
	}
	out := filepath.Join(Cache(), "vchanpeer-"+hex.EncodeToString(h.Sum(nil))[:16])
	if b, err := os.ReadFile(out); err == nil {
		return b, nil
	}
	tmp := out + ".tmp"
	args = append(args, "-o", tmp)
	cmd := exec.Command("gcc", args...)
	cmd.Stdin = bytes.NewReader(src)
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("vchanpeer: gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	// drop the binaries of earlier sources
	if old, _ := filepath.Glob(filepath.Join(Cache(), "vchanpeer-????????????????")); len(old) > 0 {
		for _, f := range old {
			if f != out {
				os.Remove(f)
			}
		}
	}
	return os.ReadFile(out)
}

// vchanPeerFile is /gozen/vchanpeer for dom0: the peer, or when it cannot
// be built here a script that says why, so that only the tests using it
// fail.
func vchanPeerFile() CPIOFile {
	b, err := BuildVchanPeer()
	if err != nil {
		msg := strings.NewReplacer("'", "", "\n", " ").Replace(err.Error())
		b = []byte("#!/bin/sh\necho 'VCHANPEER error=unavailable " + msg + "'\nexit 1\n")
	}
	return CPIOFile{Name: "gozen/vchanpeer", Mode: 0o755, Data: b}
}
