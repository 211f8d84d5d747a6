package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"
)

// serveKubeletAPI serves the parts of the kubelet API that the API server
// proxies to: exec/run (kubectl exec), containerLogs (kubectl logs), healthz.
func (a *Agent) serveKubeletAPI(node string, port int) error {
	if a.opts.tlsCert == "" {
		klog.Warningf("no --tls-cert: kubelet API of %s not served", node)
		return nil
	}
	cert, err := tls.LoadX509KeyPair(a.opts.tlsCert, a.opts.tlsKey)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.ca)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	h := &kubeletAPI{a: a, node: node}
	mux.HandleFunc("/exec/", h.authn(h.exec))
	mux.HandleFunc("/run/", h.authn(h.run))
	mux.HandleFunc("/containerLogs/", h.authn(h.logs))
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("kubelet API of %s: %v", node, err)
		}
	}()
	return nil
}

type kubeletAPI struct {
	a    *Agent
	node string
}

func (h *kubeletAPI) authn(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "client certificate required", http.StatusUnauthorized)
			return
		}
		f(w, r)
	}
}

// parts splits /verb/ns/pod/[uid/]container.
func parts(path string) (ns, pod, uid, container string, ok bool) {
	p := strings.Split(strings.Trim(path, "/"), "/")
	switch len(p) {
	case 4:
		return p[1], p[2], "", p[3], true
	case 5:
		return p[1], p[2], p[3], p[4], true
	}
	return "", "", "", "", false
}

func (h *kubeletAPI) target(ns, pod, uid, container string) (*podWorker, *ctr, error) {
	w := h.a.findWorker(ns, pod, uid)
	if w == nil {
		return nil, nil, fmt.Errorf("pod %s/%s is not running on node %s", ns, pod, h.node)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pod.Spec.NodeName != h.node {
		return nil, nil, fmt.Errorf("pod %s/%s is not running on node %s", ns, pod, h.node)
	}
	for _, c := range w.ctrs {
		if c.spec.Name == container {
			if c.pid == 0 {
				return nil, nil, fmt.Errorf("container %q in pod %s/%s is not running", container, ns, pod)
			}
			return w, c, nil
		}
	}
	return nil, nil, fmt.Errorf("container %q not found in pod %s/%s", container, ns, pod)
}

func (h *kubeletAPI) exec(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid, container, ok := parts(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if _, _, err := h.target(ns, pod, uid, container); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	remotecommand.ServeExec(w, r, &executor{h}, ns+"/"+pod, uid, container, cmd, opts,
		4*time.Hour, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// run is the non-streaming variant: POST /run/ns/pod/container?cmd=...
func (h *kubeletAPI) run(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid, container, ok := parts(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	cmd := strings.Fields(r.FormValue("cmd"))
	var out bytes.Buffer
	err := (&executor{h}).ExecInContainer(r.Context(), ns+"/"+pod, uid, container, cmd, nil, nopCloser{&out}, nopCloser{&out}, false, nil, 0)
	if err != nil && !errors.As(err, new(utilexec.CodeExitError)) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(out.Bytes())
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

type executor struct{ h *kubeletAPI }

// ExecInContainer runs cmd in the container's mount namespace with the
// container's environment and working directory.
func (e *executor) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	ns, pod, _ := strings.Cut(name, "/")
	_, c, err := e.h.target(ns, pod, uid, container)
	if err != nil {
		return err
	}
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	args := []string{"--target", strconv.Itoa(c.pid), "--mount", "--wd=" + c.workDir, "--"}
	x := exec.CommandContext(ctx, "nsenter", append(args, cmd...)...)
	x.Env = c.env
	if tty {
		return execTTY(x, in, out, resize)
	}
	if out != nil {
		x.Stdout = out
	}
	if errw != nil {
		x.Stderr = errw
	} else if tty && out != nil {
		x.Stderr = out
	}
	var stdin io.WriteCloser
	if in != nil {
		if stdin, err = x.StdinPipe(); err != nil {
			return err
		}
	}
	if err := x.Start(); err != nil {
		return err
	}
	if stdin != nil {
		go func() { _, _ = io.Copy(stdin, in); stdin.Close() }()
	}
	err = x.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: exitCode(x, err)}
	}
	return err
}

func (h *kubeletAPI) logs(w http.ResponseWriter, r *http.Request) {
	ns, pod, _, container, ok := parts(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	p, err := h.a.podLister.Pods(ns).Get(pod)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	path := filepath.Join(h.a.opts.stateDir, "pods", string(p.UID), "containers", container, "log")
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, fmt.Sprintf("no logs for container %q of pod %s/%s (not started yet?)", container, ns, pod), http.StatusNotFound)
		return
	}
	defer f.Close()
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/plain")
	var limit int64 = -1
	if v, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil {
		limit = v
	}
	data, _ := io.ReadAll(f)
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		data = tailLines(data, n)
	}
	write := func(b []byte) bool {
		if limit >= 0 {
			if int64(len(b)) > limit {
				b = b[:limit]
			}
			limit -= int64(len(b))
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		return limit != 0
	}
	if !write(data) || q.Get("follow") != "true" {
		return
	}
	buf := make([]byte, 32*1024)
	for {
		n, _ := f.Read(buf)
		if n > 0 {
			if !write(buf[:n]) {
				return
			}
			continue
		}
		if _, _, err := h.target(ns, pod, string(p.UID), container); err != nil {
			n, _ := f.Read(buf) // drain what was written last
			if n > 0 {
				write(buf[:n])
			}
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tailLines(b []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	var lines [][]byte
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for s.Scan() {
		lines = append(lines, append(append([]byte{}, s.Bytes()...), '\n'))
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, nil)
}

// execTTY runs x on a new pseudo-terminal (kubectl exec -t).
func execTTY(x *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("ptsname: %w", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	x.Stdin, x.Stdout, x.Stderr = pts, pts, pts
	x.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if !slices.ContainsFunc(x.Env, func(e string) bool { return strings.HasPrefix(e, "TERM=") }) {
		x.Env = append(x.Env, "TERM=xterm")
	}
	err = x.Start()
	pts.Close()
	if err != nil {
		return err
	}
	if resize != nil {
		go func() {
			for sz := range resize {
				_ = unix.IoctlSetWinsize(int(ptmx.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
			}
		}()
	}
	if in != nil {
		go func() { _, _ = io.Copy(ptmx, in) }()
	}
	copied := make(chan struct{})
	go func() {
		if out != nil {
			_, _ = io.Copy(out, ptmx) // ends with EIO once the last writer is gone
		} else {
			_, _ = io.Copy(io.Discard, ptmx)
		}
		close(copied)
	}()
	err = x.Wait()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: exitCode(x, err)}
	}
	return err
}
