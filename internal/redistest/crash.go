package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A host crash loses what the kernel had not yet written to the disk. Redis decides
// what that is with its appendfsync policy: it writes the AOF with write(2) and makes it
// durable with fdatasync(2), at every write ("always"), about once a second from a
// background thread ("everysec") or never ("no", leaving it to the kernel's writeback).
// A server started with TraceSyncs runs under strace, which logs each write to and each
// fsync of the AOF increment files; Crash kills the server with SIGKILL and then cuts
// each increment file back to the bytes written before the last fsync that completed:
// what a crash of the host at that moment keeps at worst. (The kernel may have written
// back more by itself; the cut is the loss the policy allows, not a guess at less.)

// CrashReport says what a crash cut from each AOF increment file.
type CrashReport struct {
	Files []CrashFile
}

// CrashFile is one AOF increment file after a crash.
type CrashFile struct {
	Path    string
	Written int64 // bytes in the file when the server was killed
	Synced  int64 // bytes made durable by an fsync: the size after the crash
}

// Cut is the number of bytes the crash took from all files.
func (r CrashReport) Cut() int64 {
	var n int64
	for _, f := range r.Files {
		n += f.Written - f.Synced
	}
	return n
}

func (r CrashReport) String() string {
	var b strings.Builder
	for _, f := range r.Files {
		fmt.Fprintf(&b, "%s: %d bytes written, %d synced, %d cut; ", filepath.Base(f.Path), f.Written, f.Synced, f.Written-f.Synced)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// Crash models a host crash: it kills the server (SIGKILL) and cuts every AOF
// increment file back to what its fsyncs made durable. The server needs TraceSyncs;
// [Server.Restart] starts it again from what is left.
func (s *Server) Crash() (CrashReport, error) {
	if !s.opts.TraceSyncs {
		return CrashReport{}, errors.New("redistest: Crash needs Options.TraceSyncs")
	}
	s.Kill()
	s.mu.Lock()
	base := s.aofBase
	s.mu.Unlock()
	written, synced, err := parseSyncTrace(s.tracePath())
	if err != nil {
		return CrashReport{}, err
	}
	var rep CrashReport
	for path, w := range written {
		fi, err := os.Stat(path)
		if err != nil {
			return rep, fmt.Errorf("redistest: crash: %w", err)
		}
		f := CrashFile{Path: path, Written: base[path] + w, Synced: base[path] + synced[path]}
		if fi.Size() != f.Written {
			return rep, fmt.Errorf("redistest: crash: %s has %d bytes, the trace accounts for %d: the trace is incomplete", path, fi.Size(), f.Written)
		}
		if err := os.Truncate(path, f.Synced); err != nil {
			return rep, fmt.Errorf("redistest: crash: %w", err)
		}
		rep.Files = append(rep.Files, f)
	}
	if len(rep.Files) == 0 {
		return rep, errors.New("redistest: crash: the trace shows no write to an AOF increment file")
	}
	return rep, nil
}

// WaitForSync returns once the traced server starts or ends an fsync of its AOF after the
// call: a crash some time later then cuts what was written since, at least. It needs
// TraceSyncs.
func (s *Server) WaitForSync(timeout time.Duration) error {
	if !s.opts.TraceSyncs {
		return errors.New("redistest: WaitForSync needs Options.TraceSyncs")
	}
	f, err := os.Open(s.tracePath())
	if err != nil {
		return fmt.Errorf("redistest: read the trace: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	var pending []byte
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(timeout)
	for {
		for {
			n, _ := f.Read(buf)
			if n == 0 {
				break
			}
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				line := string(pending[:i])
				pending = pending[i+1:]
				if m := traceStart.FindStringSubmatch(line); m != nil && (m[2] == "fsync" || m[2] == "fdatasync") && strings.HasSuffix(m[3], ".incr.aof") {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: no fsync of the AOF in %s", timeout)
		}
		time.Sleep(5 * time.Millisecond) // poll with a deadline: strace appends as Redis goes
	}
}

func (s *Server) tracePath() string { return filepath.Join(s.dir, "syncs.trace") }

// redisPID reads the pid file of a traced server, waiting for it to appear.
func (s *Server) redisPID() (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(s.dir, "redis.pid"))
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("redistest: no pid file: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll with a deadline: redis writes it at start
	}
}

// aofSizes is the size of each AOF increment file now.
func (s *Server) aofSizes() (map[string]int64, error) {
	sizes := make(map[string]int64)
	paths, err := filepath.Glob(filepath.Join(s.dir, "appendonlydir", "*.incr.aof"))
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		sizes[p] = fi.Size()
	}
	return sizes, nil
}

// A trace line: "PID call(FD</path>, …) = RESULT", or the call's start
// "PID call(FD</path>, … <unfinished ...>" and, later, "PID <... call resumed>…) = RESULT"
// when another thread's call came in between.
var (
	traceStart   = regexp.MustCompile(`^(\d+)\s+(write|pwrite64|fsync|fdatasync)\(\d+<([^>]*)>`)
	traceResumed = regexp.MustCompile(`^(\d+)\s+<\.\.\. (write|pwrite64|fsync|fdatasync) resumed>`)
	traceResult  = regexp.MustCompile(` = (-?\d+)(?: [A-Z]\w*.*)?$`)
)

// parseSyncTrace reads an strace log and returns, per AOF increment file, the bytes
// written and the bytes written before the start of the last fsync that succeeded.
func parseSyncTrace(path string) (written, synced map[string]int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("redistest: read the trace: %w", err)
	}
	defer f.Close()
	written, synced = make(map[string]int64), make(map[string]int64)
	type pending struct {
		call, path string
		at         int64 // bytes written when an fsync started
	}
	open := make(map[string]pending) // by pid
	finish := func(p pending, result int64) {
		switch {
		case result < 0:
		case p.call == "write" || p.call == "pwrite64":
			written[p.path] += result
		case result == 0:
			synced[p.path] = max(synced[p.path], p.at)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := traceResumed.FindStringSubmatch(line); m != nil {
			p, ok := open[m[1]]
			delete(open, m[1])
			if r := traceResult.FindStringSubmatch(line); ok && r != nil {
				n, _ := strconv.ParseInt(r[1], 10, 64)
				finish(p, n)
			}
			continue
		}
		m := traceStart.FindStringSubmatch(line)
		if m == nil || !strings.HasSuffix(m[3], ".incr.aof") {
			continue
		}
		p := pending{call: m[2], path: m[3], at: written[m[3]]}
		if _, ok := written[p.path]; !ok {
			written[p.path] = 0
		}
		if strings.HasSuffix(line, "<unfinished ...>") {
			open[m[1]] = p
			continue
		}
		if r := traceResult.FindStringSubmatch(line); r != nil {
			n, _ := strconv.ParseInt(r[1], 10, 64)
			finish(p, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("redistest: read the trace: %w", err)
	}
	return written, synced, nil
}
