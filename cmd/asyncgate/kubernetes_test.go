package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

// The manifests of deploy/kubernetes, decoded as far as the checks need.
// make lint validates them against the Kubernetes schemas (kubeconform) when
// those can be fetched; this test checks, offline, what a schema cannot: that
// they fit the binary they run.
const manifestDir = "../../deploy/kubernetes"

type k8sMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Type       string            `yaml:"type"`
	Metadata   k8sMeta           `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
	file       string
}

type k8sNameRef struct {
	Name string `yaml:"name"`
}

type k8sKeyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *k8sNameRef `yaml:"configMapRef"`
		SecretRef    *k8sNameRef `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *k8sKeyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *k8sKeyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type k8sDeploymentSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata k8sMeta `yaml:"metadata"`
		Spec     struct {
			TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot *bool `yaml:"runAsNonRoot"`
			} `yaml:"securityContext"`
			Containers []k8sContainer `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

// manifests are the objects of deploy/kubernetes by kind and name.
type manifests map[string]map[string]*k8sObject

func (m manifests) get(kind, name string) *k8sObject { return m[kind][name] }

func loadManifests(t *testing.T) manifests {
	t.Helper()
	kust, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(kust, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	// Every manifest in the directory is applied, and only those.
	files, _ := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	var onDisk []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			onDisk = append(onDisk, b)
		}
	}
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("kustomization.yaml resources %v, files in %s %v", listed, manifestDir, onDisk)
	}
	m := manifests{}
	for _, name := range k.Resources {
		b, err := os.ReadFile(filepath.Join(manifestDir, name))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		raw := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			// Kubernetes takes only strings in a ConfigMap's or Secret's
			// data: 50 or true must be quoted ("50"), or the apply fails.
			var values struct {
				Data       map[string]yaml.Node `yaml:"data"`
				StringData map[string]yaml.Node `yaml:"stringData"`
			}
			if err := raw.Decode(&values); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, data := range []map[string]yaml.Node{values.Data, values.StringData} {
				for k, v := range data {
					if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
						t.Errorf("%s: %s %s: %s is %s %q, Kubernetes wants a string: quote it", name, o.Kind, o.Metadata.Name, k, v.Tag, v.Value)
					}
				}
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: an object without kind, apiVersion or metadata.name", name)
			}
			o.file = name
			if m[o.Kind] == nil {
				m[o.Kind] = map[string]*k8sObject{}
			}
			if m[o.Kind][o.Metadata.Name] != nil {
				t.Fatalf("%s: %s %s defined twice", name, o.Kind, o.Metadata.Name)
			}
			m[o.Kind][o.Metadata.Name] = &o
		}
	}
	return m
}

func decodeSpec[T any](t *testing.T, o *k8sObject) T {
	t.Helper()
	var s T
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return s
}

var envInHelp = regexp.MustCompile(`env (ASYNCGATE_[A-Z0-9_]+)\)`)

// flagEnvs are the ASYNCGATE_* variables of cmd, as its help lists them.
func flagEnvs(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	out, err := exec.Command(binary, cmd, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("asyncgate %s -h: %v\n%s", cmd, err, out)
	}
	envs := map[string]bool{}
	for _, m := range envInHelp.FindAllStringSubmatch(string(out), -1) {
		envs[m[1]] = true
	}
	if len(envs) == 0 {
		t.Fatalf("asyncgate %s -h lists no ASYNCGATE_* variable:\n%s", cmd, out)
	}
	return envs
}

// containerEnv resolves the environment a container gets from its
// ConfigMaps, Secrets and values, failing on a reference to nothing.
func containerEnv(t *testing.T, m manifests, c k8sContainer) map[string]string {
	t.Helper()
	env := map[string]string{}
	secretData := func(name string) map[string]string {
		s := m.get("Secret", name)
		if s == nil {
			t.Fatalf("container %s: Secret %q is not in the manifests", c.Name, name)
		}
		return s.StringData
	}
	for _, f := range c.EnvFrom {
		switch {
		case f.ConfigMapRef != nil:
			cm := m.get("ConfigMap", f.ConfigMapRef.Name)
			if cm == nil {
				t.Fatalf("container %s: ConfigMap %q is not in the manifests", c.Name, f.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		case f.SecretRef != nil:
			for k, v := range secretData(f.SecretRef.Name) {
				env[k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secretData(ref.Name)[ref.Key]
			if !ok {
				t.Fatalf("container %s: %s refers to key %q of Secret %q, which has no such key", c.Name, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := m.get("ConfigMap", ref.Name)
			if cm == nil {
				t.Fatalf("container %s: ConfigMap %q is not in the manifests", c.Name, ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				t.Fatalf("container %s: %s refers to key %q of ConfigMap %q, which has no such key", c.Name, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		}
	}
	return env
}

// portOf returns the port of a listen address such as ":8080".
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return n
}

// containerPort returns the number of the container's port called name.
func containerPort(t *testing.T, c k8sContainer, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

// get answers GET url's status, polling until the server answers.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			return res.StatusCode
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKubernetesManifests checks that deploy/kubernetes fits the binary: each
// Deployment runs a real command whose every ASYNCGATE_* variable is one of
// its flags and parses into a valid config, references resolve, probes hit
// routes the process serves on the port it listens on, the worker's grace
// period outlasts its shutdown, and every pod runs non-root, read-only.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"} {
		if len(m[kind]) == 0 {
			t.Errorf("no %s in %s", kind, manifestDir)
		}
	}
	byCommand := map[string]*k8sObject{}
	for _, d := range m["Deployment"] {
		spec := decodeSpec[k8sDeploymentSpec](t, d)
		if len(spec.Template.Spec.Containers) != 1 || len(spec.Template.Spec.Containers[0].Args) == 0 {
			t.Fatalf("Deployment %s: want one container whose args name the command", d.Metadata.Name)
		}
		byCommand[spec.Template.Spec.Containers[0].Args[0]] = d
	}
	for _, cmd := range []string{"api", "worker", "sim"} {
		if byCommand[cmd] == nil {
			t.Fatalf("no Deployment runs 'asyncgate %s'", cmd)
		}
	}

	rs := redistest.Start(t, redistest.Options{})
	for cmd, d := range byCommand {
		t.Run(d.Metadata.Name, func(t *testing.T) {
			spec := decodeSpec[k8sDeploymentSpec](t, d)
			pod := spec.Template.Spec
			c := pod.Containers[0]
			for k, v := range spec.Selector.MatchLabels {
				if spec.Template.Metadata.Labels[k] != v {
					t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, spec.Template.Metadata.Labels)
				}
			}
			if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Error("pod securityContext.runAsNonRoot is not true")
			}
			if sc := c.SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("container securityContext wants readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Error("container resources want cpu and memory requests and a memory limit")
			}

			env := containerEnv(t, m, c)
			known := flagEnvs(t, cmd)
			for name := range env {
				if strings.HasPrefix(name, "ASYNCGATE_") && !known[name] {
					t.Errorf("%s is not a variable of 'asyncgate %s' (see asyncgate %s -h)", name, cmd, cmd)
				}
			}
			getenv := func(k string) string { return env[k] }

			switch cmd {
			case "api", "worker":
				var o options
				cf := newFlags(cmd, getenv, &o)
				if err := cf.Parse(c.Args[1:], io.Discard, ""); err != nil {
					t.Fatalf("asyncgate %s with the manifest's flags: %v", strings.Join(c.Args, " "), err)
				}
				if o.redisURL == "" {
					t.Fatal("no Redis URL (ASYNCGATE_REDIS)")
				}
				api, worker := cmd == "api", cmd == "worker"
				cfg, err := o.appConfig(api, worker, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatalf("the manifest's config does not load: %v", err)
				}
				// What the probes ask is served by this process, on the port they ask.
				rdb, err := app.NewRedis(rs.URL(rs.NewDB(t)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rdb.Close() })
				cfg.Redis = rdb
				var probePort int
				if api {
					probePort = portOf(t, o.addr)
					cfg.Addr = "127.0.0.1:0"
				} else {
					if o.metricsAddr == "" {
						t.Fatal("the worker has no ASYNCGATE_METRICS_ADDR: nothing to probe or scrape")
					}
					probePort = portOf(t, o.metricsAddr)
					cfg.MetricsAddr = "127.0.0.1:0"
				}
				a, err := app.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := a.Start(context.Background(), api); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					a.Shutdown(ctx)
				})
				base := a.URL()
				if worker {
					base = a.MetricsURL()
				}
				probes := 0
				for what, p := range map[string]*k8sProbe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
					if p == nil {
						continue
					}
					if p.HTTPGet == nil {
						t.Errorf("%s is not an httpGet", what)
						continue
					}
					probes++
					if got := containerPort(t, c, p.HTTPGet.Port); got != probePort {
						t.Errorf("%s on port %s (%d), the process listens on %d", what, p.HTTPGet.Port, got, probePort)
					}
					if code := getStatus(t, base+p.HTTPGet.Path); code != http.StatusOK {
						t.Errorf("%s GET %s: %d, want 200", what, p.HTTPGet.Path, code)
					}
				}
				if api && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
					t.Error("the API wants a readiness and a liveness probe")
				}
				if worker && c.LivenessProbe == nil {
					t.Error("the worker wants a liveness probe")
				}
				if probes == 0 {
					t.Error("no probe")
				}

				// The grace period outlasts the process's own shutdown (and the
				// preStop pause before it), or SIGKILL cuts it short.
				grace := 30 * time.Second // Kubernetes's default
				if pod.TerminationGracePeriodSeconds != nil {
					grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
				}
				need := listenerShutdownTimeout
				if worker {
					if cfg.WorkerPool.ShutdownTimeout <= 0 {
						t.Fatal("the CLI leaves the worker's task shutdown timeout unset")
					}
					need += cfg.WorkerPool.ShutdownTimeout
				}
				if ps := c.Lifecycle.PreStop; ps != nil && ps.Sleep != nil {
					need += time.Duration(ps.Sleep.Seconds) * time.Second
				}
				if grace <= need {
					t.Errorf("terminationGracePeriodSeconds %s, want more than the %s the process may take to stop", grace, need)
				}
			case "sim":
				srv, err := sim.New(sim.Config{}).Start("127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { srv.Shutdown(context.Background()) })
				if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
					t.Fatal("the simulator wants an httpGet readiness probe")
				}
				p := c.ReadinessProbe.HTTPGet
				if got, want := containerPort(t, c, p.Port), portOf(t, env["ASYNCGATE_SIM_ADDR"]); got != want {
					t.Errorf("readiness probe on port %d, the simulator listens on %d", got, want)
				}
				if code := getStatus(t, srv.URL+p.Path); code != http.StatusOK {
					t.Errorf("readiness GET %s: %d, want 200", p.Path, code)
				}
			}
		})
	}

	t.Run("services", func(t *testing.T) {
		for _, s := range m["Service"] {
			spec := decodeSpec[struct {
				Selector map[string]string `yaml:"selector"`
				Ports    []struct {
					TargetPort string `yaml:"targetPort"`
				} `yaml:"ports"`
			}](t, s)
			d := matchingDeployment(t, m, s.Metadata.Name, spec.Selector)
			if d == nil {
				continue
			}
			c := decodeSpec[k8sDeploymentSpec](t, d).Template.Spec.Containers[0]
			for _, p := range spec.Ports {
				containerPort(t, c, p.TargetPort)
			}
		}
		for _, p := range m["PodDisruptionBudget"] {
			spec := decodeSpec[struct {
				Selector struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"selector"`
			}](t, p)
			matchingDeployment(t, m, p.Metadata.Name, spec.Selector.MatchLabels)
		}
		for _, h := range m["HorizontalPodAutoscaler"] {
			spec := decodeSpec[struct {
				ScaleTargetRef struct {
					Kind string `yaml:"kind"`
					Name string `yaml:"name"`
				} `yaml:"scaleTargetRef"`
				MinReplicas int `yaml:"minReplicas"`
			}](t, h)
			if m.get(spec.ScaleTargetRef.Kind, spec.ScaleTargetRef.Name) == nil {
				t.Errorf("HorizontalPodAutoscaler %s scales %s %s, which is not in the manifests", h.Metadata.Name, spec.ScaleTargetRef.Kind, spec.ScaleTargetRef.Name)
			}
			if spec.MinReplicas < 2 {
				t.Errorf("HorizontalPodAutoscaler %s: minReplicas %d leaves its PodDisruptionBudget nothing to keep", h.Metadata.Name, spec.MinReplicas)
			}
		}
	})
}

// matchingDeployment returns the one Deployment whose pods selector selects.
func matchingDeployment(t *testing.T, m manifests, who string, selector map[string]string) *k8sObject {
	t.Helper()
	var found []*k8sObject
	for _, d := range m["Deployment"] {
		labels := decodeSpec[k8sDeploymentSpec](t, d).Template.Metadata.Labels
		ok := len(selector) > 0
		for k, v := range selector {
			ok = ok && labels[k] == v
		}
		if ok {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Errorf("%s selects %d Deployments' pods (%v), want 1", who, len(found), selector)
		return nil
	}
	return found[0]
}
