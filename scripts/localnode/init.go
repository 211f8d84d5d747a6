package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// containerInit runs as the first process of a container, already inside a
// new mount namespace (CLONE_NEWNS). It makes all mounts private, bind-mounts
// the container's volumes at their mountPaths, then execs the command.
func containerInit(specPath string) {
	fail := func(format string, args ...interface{}) {
		fmt.Fprintf(os.Stderr, "localnode: container setup: "+format+"\n", args...)
		os.Exit(128)
	}
	b, err := os.ReadFile(specPath)
	if err != nil {
		fail("%v", err)
	}
	var s containerSpec
	if err := json.Unmarshal(b, &s); err != nil {
		fail("%v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail("make / private: %v", err)
	}
	for _, m := range s.Mounts {
		m.Target = filepath.Clean(m.Target)
		if err := ensureMountPoint(m.Target, m.File); err != nil {
			fail("mount point %s: %v", m.Target, err)
		}
		if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			fail("bind %s on %s: %v", m.Source, m.Target, err)
		}
		ours[m.Target] = true
		if m.ReadOnly {
			if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				fail("remount %s read-only: %v", m.Target, err)
			}
		}
	}
	if s.Dir != "" {
		if err := os.Chdir(s.Dir); err != nil {
			fail("workingDir: %v", err)
		}
	}
	path := s.Argv[0]
	if !strings.Contains(path, "/") {
		envPath := ""
		for _, e := range s.Env {
			if v, ok := strings.CutPrefix(e, "PATH="); ok {
				envPath = v
			}
		}
		if path, err = lookPath(path, envPath); err != nil {
			fail("exec %q: executable file not found in $PATH", s.Argv[0])
		}
	}
	if s.GID != nil {
		if err := syscall.Setgroups(nil); err != nil {
			fail("setgroups: %v", err)
		}
		if err := syscall.Setgid(int(*s.GID)); err != nil {
			fail("setgid: %v", err)
		}
	}
	if s.UID != nil {
		if err := syscall.Setuid(int(*s.UID)); err != nil {
			fail("setuid: %v", err)
		}
	}
	err = unix.Exec(path, s.Argv, s.Env)
	fmt.Fprintf(os.Stderr, "localnode: exec %s: %v\n", path, err)
	os.Exit(127)
}

// ensureMountPoint makes target exist with as little trace on the host as
// possible: when a path component is missing, the first missing component is
// created on the host (an empty directory, or the empty file itself) and, in
// this private mount namespace, a tmpfs is put on it (or on an existing empty
// directory on the way) so that deeper directories are never created on the host.
func ensureMountPoint(target string, file bool) error {
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	for d := filepath.Dir(target); d != "/"; d = filepath.Dir(d) {
		if ours[d] {
			// inside a volume or tmpfs of this container: create it there
			return createRest(target, file)
		}
	}
	parts := strings.Split(strings.TrimPrefix(target, "/"), "/")
	cur := "/"
	for i, p := range parts {
		next := filepath.Join(cur, p)
		last := i == len(parts)-1
		st, err := os.Stat(next)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", next)
			}
			cur = next
			continue
		}
		if !os.IsNotExist(err) {
			return err
		}
		// next is missing: if cur is an empty directory, a tmpfs hides nothing
		if cur != "/" && isEmptyDir(cur) && !isMountPoint(cur) {
			if err := unix.Mount("tmpfs", cur, "tmpfs", 0, "mode=755"); err != nil {
				return fmt.Errorf("tmpfs on %s: %w", cur, err)
			}
			ours[cur] = true
			return createRest(target, file)
		}
		if last && file {
			f, err := os.OpenFile(next, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		if err := os.Mkdir(next, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if last {
			return nil
		}
		if err := unix.Mount("tmpfs", next, "tmpfs", 0, "mode=755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", next, err)
		}
		ours[next] = true
		return createRest(target, file)
	}
	return nil
}

// ours holds the mount points this container set up (volumes and tmpfs).
var ours = map[string]bool{}

func createRest(target string, file bool) error {
	if !file {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func isEmptyDir(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

func isMountPoint(p string) bool {
	var a, b unix.Stat_t
	if unix.Stat(p, &a) != nil || unix.Stat(filepath.Dir(p), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}
