// Package charts_test checks the wsgate Helm chart with the Helm SDK as a
// library: lint as `helm lint --strict` does, render as `helm template` does,
// and assert the invariants of STYLE.md rule 13 on every rendered object, for
// the default values and for every values file under wsgate/ci/. No cluster,
// no network and no helm binary are needed.
//
// The default values render as they are: nats.url defaults to
// nats://nats:4222 (the official NATS chart installed as release "nats" in
// the same namespace), so the tests do not need to set it.
package charts_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "wsgate"
	releaseName = "wsgate"
	namespace   = "realtime"
	// envExample and dispatcherService are read to keep the chart in step
	// with the services: every variable must be reachable, and the
	// dispatcher's grace period must cover its own shutdown bound.
	envExample        = "../.env.example"
	dispatcherService = "../services/dispatcher/service/service.go"
	// edgeServer is read for the paths the edge serves the JS client
	// under, which the Ingress must route by default.
	edgeServer = "../services/edge/edge.go"
)

// kube130 is the first Kubernetes with the preStop sleep action on by
// default; the tests that are about anything else render for it.
var kube130 = &chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}

// kubeVersions are the clusters every lint and render is checked for: nil is
// Helm's default capabilities, what `helm template` and `helm lint` use
// without --kube-version (v1.20 in the SDK; release binaries may default to a
// newer one), and 1.30, as `--kube-version 1.30` gives.
var kubeVersions = []struct {
	name    string
	version *chartutil.KubeVersion
}{
	{"helm-default", nil},
	{"kube-1.30", kube130},
}

// sleepActionIn reports whether Kubernetes v has the built-in preStop sleep
// action (beta and on by default from 1.30); nil is Helm's default version.
func sleepActionIn(t *testing.T, v *chartutil.KubeVersion) bool {
	t.Helper()
	if v == nil {
		v = &chartutil.DefaultCapabilities.KubeVersion
	}
	major, err1 := strconv.Atoi(v.Major)
	minor, err2 := strconv.Atoi(strings.TrimSuffix(v.Minor, "+"))
	if err1 != nil || err2 != nil {
		t.Fatalf("kube version %+v: %v %v", v, err1, err2)
	}
	return major > 1 || major == 1 && minor >= 30
}

// secretEnv are the variables that carry a secret themselves; they must
// come from a secretKeyRef, never from a literal value or a ConfigMap.
var secretEnv = []string{"EDGE_JWT_SECRET", "NATS_PASSWORD", "NATS_TOKEN", "DISPATCHER_API_KEYS", "DISPATCHER_ROUTES_SECRET"}

// fileEnv are the variables that name a mounted file.
var fileEnv = []string{"EDGE_JWT_PUBLIC_KEY_FILE", "NATS_CREDS", "NATS_NKEY_FILE", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"}

// addrEnv is the variable holding each component's listen address.
var addrEnv = map[string]string{"edge": "EDGE_ADDR", "dispatcher": "DISPATCHER_ADDR"}

var components = []string{"edge", "dispatcher"}

// valuesFile is one set of values the chart is checked with; path "" means
// the chart's defaults alone.
type valuesFile struct {
	name string
	path string
}

// valuesFiles returns the defaults and every ci/*-values.yaml.
func valuesFiles(t *testing.T) []valuesFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("want at least 3 values files in %s/ci, found %d", chartDir, len(paths))
	}
	files := []valuesFile{{name: "defaults"}}
	for _, p := range paths {
		files = append(files, valuesFile{name: strings.TrimSuffix(filepath.Base(p), ".yaml"), path: p})
	}
	return files
}

// readValues returns the values of f (nil for the defaults).
func readValues(t *testing.T, f valuesFile) map[string]any {
	t.Helper()
	if f.path == "" {
		return map[string]any{}
	}
	v, err := chartutil.ReadValuesFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	return v.AsMap()
}

// component is the part of a component's values the assertions need.
type component struct {
	Replicas                      int
	Port                          int
	Path                          string
	DrainTimeout                  int
	PreStopSleepSeconds           int
	TerminationGraceMarginSeconds int
	JWT                           struct{ Secret, PublicKey string }
	Autoscaling                   struct {
		Enabled                  bool
		MinReplicas, MaxReplicas int32
	}
	PDB            struct{ Enabled bool }
	TopologySpread struct {
		Enabled           bool
		WhenUnsatisfiable string
	}
	Service struct{ Enabled bool }
	API     struct{ Keys []string }
	Routes  struct {
		Items                                   []map[string]any
		ExistingConfigMap, ExistingConfigMapKey string
		Secret                                  string
	}
	ExtraEnv map[string]any
	Ingress  struct {
		Enabled     bool
		Annotations map[string]string
		Hosts       []string
		Paths       []string
	}
}

// chartValues is the part of the merged values the assertions need.
type chartValues struct {
	Nats struct {
		URL, Password, Token, Credentials, NkeySeed string
		TLS                                         struct{ SecretName string }
	}
	ExtraEnv           map[string]any
	ExistingSecret     string
	ExistingSecretKeys map[string]string
	ServiceAccount     struct {
		Create bool
		Name   string
	}
	Metrics struct {
		ServiceMonitor struct{ Enabled bool }
	}
	Edge, Dispatcher component
}

func (v *chartValues) component(name string) component {
	if name == "edge" {
		return v.Edge
	}
	return v.Dispatcher
}

// inlineSecrets are the secret strings set in the values; none may appear in
// clear text in any manifest (and, with existingSecret, not at all).
func (v *chartValues) inlineSecrets() []string {
	var out []string
	candidates := []string{v.Edge.JWT.Secret, v.Nats.Password, v.Nats.Token, v.Nats.Credentials, v.Nats.NkeySeed, v.Dispatcher.Routes.Secret}
	for _, s := range append(candidates, v.Dispatcher.API.Keys...) {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// rendered is one render of the chart, decoded into typed objects.
type rendered struct {
	values          chartValues
	sleepAction     bool                          // the cluster rendered for has the preStop sleep action
	deployments     map[string]*appsv1.Deployment // by component
	services        map[string]*corev1.Service    // by component
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs            map[string]*policyv1.PodDisruptionBudget
	configMaps      map[string]*corev1.ConfigMap // by name
	secrets         []*corev1.Secret
	serviceAccounts []*corev1.ServiceAccount
	ingresses       []*networkingv1.Ingress
	serviceMonitors []map[string]any
	prometheusRules []map[string]any
	docs            map[string]string // kind/name -> manifest text
	notes           string
}

// loadChart loads the chart from disk, as helm does for a chart directory.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renderChart renders the chart for Kubernetes 1.30 like `helm template
// --kube-version 1.30` (client only, no cluster) and returns the error of a
// failed render (schema, fail, required).
func renderChart(t *testing.T, vals map[string]any) (*rendered, error) {
	t.Helper()
	return renderChartFor(t, vals, kube130)
}

// renderChartFor renders the chart for Kubernetes kv; nil renders with
// Helm's default capabilities, as `helm template` without --kube-version.
func renderChartFor(t *testing.T, vals map[string]any, kv *chartutil.KubeVersion) (*rendered, error) {
	t.Helper()
	chrt := loadChart(t)
	merged, err := chartutil.CoalesceValues(chrt, copyMap(vals))
	if err != nil {
		return nil, err
	}
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	install := action.NewInstall(cfg)
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.IncludeCRDs = true
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.KubeVersion = kv
	rel, err := install.Run(chrt, copyMap(vals))
	if err != nil {
		return nil, err
	}
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		hpas:        map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
		configMaps:  map[string]*corev1.ConfigMap{},
		docs:        map[string]string{},
		notes:       rel.Info.Notes,
		sleepAction: sleepActionIn(t, kv),
	}
	raw, err := json.Marshal(merged.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &r.values); err != nil {
		t.Fatal(err)
	}
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		r.add(t, doc)
	}
	return r, nil
}

// mustRender renders vals and fails the test when the render fails.
func mustRender(t *testing.T, vals map[string]any) *rendered {
	t.Helper()
	r, err := renderChart(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

// add decodes one manifest strictly (an unknown field, e.g. a misspelt one,
// is an error) into its typed object.
func (r *rendered) add(t *testing.T, doc string) {
	t.Helper()
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
		t.Fatalf("manifest is not YAML: %v\n%s", err, doc)
	}
	if meta.Kind == "" {
		return // an empty document
	}
	id := meta.Kind + "/" + meta.Metadata.Name
	if _, dup := r.docs[id]; dup {
		t.Errorf("%s rendered twice", id)
	}
	r.docs[id] = doc
	component := meta.Metadata.Labels["app.kubernetes.io/component"]
	decode := func(into any) {
		t.Helper()
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("%s does not decode as %T: %v\n%s", id, into, err, doc)
		}
	}
	switch meta.Kind {
	case "Deployment":
		d := &appsv1.Deployment{}
		decode(d)
		r.deployments[component] = d
	case "Service":
		s := &corev1.Service{}
		decode(s)
		r.services[component] = s
	case "HorizontalPodAutoscaler":
		h := &autoscalingv2.HorizontalPodAutoscaler{}
		decode(h)
		r.hpas[component] = h
	case "PodDisruptionBudget":
		p := &policyv1.PodDisruptionBudget{}
		decode(p)
		r.pdbs[component] = p
	case "ConfigMap":
		c := &corev1.ConfigMap{}
		decode(c)
		r.configMaps[c.Name] = c
	case "Secret":
		s := &corev1.Secret{}
		decode(s)
		r.secrets = append(r.secrets, s)
	case "ServiceAccount":
		s := &corev1.ServiceAccount{}
		decode(s)
		r.serviceAccounts = append(r.serviceAccounts, s)
	case "Ingress":
		i := &networkingv1.Ingress{}
		decode(i)
		r.ingresses = append(r.ingresses, i)
	case "ServiceMonitor":
		var m map[string]any
		decode(&m)
		r.serviceMonitors = append(r.serviceMonitors, m)
	case "PrometheusRule":
		var m map[string]any
		decode(&m)
		r.prometheusRules = append(r.prometheusRules, m)
	default:
		t.Errorf("unexpected kind %s (%s)", meta.Kind, meta.APIVersion)
	}
}

// env returns the ConfigMap data a component's container loads.
func (r *rendered) env(t *testing.T, component string) map[string]string {
	t.Helper()
	c := r.container(t, component)
	if len(c.EnvFrom) == 0 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Fatalf("%s: the first envFrom is not the ConfigMap", component)
	}
	cm, ok := r.configMaps[c.EnvFrom[0].ConfigMapRef.Name]
	if !ok {
		t.Fatalf("%s: ConfigMap %q is not rendered", component, c.EnvFrom[0].ConfigMapRef.Name)
	}
	return cm.Data
}

// container returns the only container of a component's Deployment.
func (r *rendered) container(t *testing.T, component string) *corev1.Container {
	t.Helper()
	d, ok := r.deployments[component]
	if !ok {
		t.Fatalf("no %s Deployment", component)
	}
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("%s: %d containers, want 1", component, n)
	}
	return &d.Spec.Template.Spec.Containers[0]
}

// TestLint runs the checks of `helm lint --strict`: no error and no warning,
// for the defaults and every values file, with Helm's default capabilities
// (plain `helm lint`) and with Kubernetes 1.30.
func TestLint(t *testing.T) {
	constraint := loadChart(t).Metadata.KubeVersion
	for _, kv := range kubeVersions {
		version := chartutil.DefaultCapabilities.KubeVersion.String()
		if kv.version != nil {
			version = kv.version.String()
		}
		// What `helm template` and `helm install` check first (and Helm 4's
		// lint): a kubeVersion constraint refusing the version.
		if constraint != "" && !chartutil.IsCompatibleRange(constraint, version) {
			t.Errorf("%s: Chart.yaml's kubeVersion %q refuses Kubernetes %s", kv.name, constraint, version)
		}
		for _, f := range valuesFiles(t) {
			t.Run(kv.name+"/"+f.name, func(t *testing.T) {
				linter := lint.AllWithKubeVersion(chartDir, readValues(t, f), namespace, kv.version)
				for _, m := range linter.Messages {
					if m.Severity >= support.WarningSev {
						t.Errorf("lint: %s", m)
					} else {
						t.Logf("lint: %s", m)
					}
				}
			})
		}
	}
}

// TestRenderInvariants renders every values file, with Helm's default
// capabilities (plain `helm template`) and for Kubernetes 1.30, and checks
// the rules every rendering must keep (STYLE.md rule 13 and the list).
func TestRenderInvariants(t *testing.T) {
	dispatcherDrain := dispatcherDrainTimeout(t)
	known := envExampleNames(t)
	for _, kv := range kubeVersions {
		for _, f := range valuesFiles(t) {
			t.Run(kv.name+"/"+f.name, func(t *testing.T) {
				r, err := renderChartFor(t, readValues(t, f), kv.version)
				if err != nil {
					t.Fatalf("render: %v", err)
				}
				checkRender(t, r, dispatcherDrain, known)
			})
		}
	}
}

// checkRender checks one rendering against the rules every rendering must keep.
func checkRender(t *testing.T, r *rendered, dispatcherDrain time.Duration, known []string) {
	t.Helper()
	for _, c := range components {
		t.Run(c, func(t *testing.T) {
			checkPod(t, r, c, dispatcherDrain)
			checkOptionalObjects(t, r, c)
			checkEnvNames(t, r, c, known)
		})
	}
	checkSecrets(t, r)
	checkIngress(t, r)
	checkServiceMonitors(t, r)
	checkServiceAccount(t, r)
}

// checkPod checks one component's Deployment and pod template.
func checkPod(t *testing.T, r *rendered, component string, dispatcherDrain time.Duration) {
	t.Helper()
	d := r.deployments[component]
	if d == nil {
		t.Fatalf("no %s Deployment", component)
	}
	pod := d.Spec.Template.Spec
	c := r.container(t, component)
	env := r.env(t, component)
	vals := r.values.component(component)

	// The named port is the one the service listens on.
	port := int32(0)
	for _, p := range c.Ports {
		if p.Name == "http" {
			port = p.ContainerPort
		}
	}
	if port == 0 {
		t.Fatalf("no container port named http: %+v", c.Ports)
	}
	_, addrPort, err := net.SplitHostPort(env[addrEnv[component]])
	if err != nil {
		t.Fatalf("%s=%q: %v", addrEnv[component], env[addrEnv[component]], err)
	}
	if addrPort != strconv.Itoa(int(port)) {
		t.Errorf("container port %d, but %s=%q", port, addrEnv[component], env[addrEnv[component]])
	}
	if int(port) != vals.Port {
		t.Errorf("container port %d, values say %d", port, vals.Port)
	}

	// Three separate probes on the named port.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("%s: missing or not httpGet", p.name)
		case p.probe.HTTPGet.Path != p.path:
			t.Errorf("%s: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		case p.probe.HTTPGet.Port != intstr.FromString("http"):
			t.Errorf("%s: port %s, want the named port http", p.name, p.probe.HTTPGet.Port.String())
		}
	}

	// The grace period outlasts preStop + drain.
	preStop := time.Duration(0)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		h := c.Lifecycle.PreStop
		if h.Sleep == nil || h.Exec != nil || h.HTTPGet != nil {
			t.Errorf("preStop must be the built-in sleep action (the image has no shell): %+v", h)
		} else {
			preStop = time.Duration(h.Sleep.Seconds) * time.Second
		}
	}
	want := time.Duration(vals.PreStopSleepSeconds) * time.Second
	if !r.sleepAction {
		want = 0 // no sleep action on this cluster: no hook at all
	}
	if preStop != want || (want == 0) != (c.Lifecycle == nil) {
		t.Errorf("preStop sleep %v (lifecycle %+v), want %v (values say %ds, sleep action on the cluster: %v)",
			preStop, c.Lifecycle, want, vals.PreStopSleepSeconds, r.sleepAction)
	}
	drain := dispatcherDrain
	if component == "edge" {
		drain, err = time.ParseDuration(env["EDGE_DRAIN_TIMEOUT"])
		if err != nil {
			t.Fatalf("EDGE_DRAIN_TIMEOUT=%q: %v", env["EDGE_DRAIN_TIMEOUT"], err)
		}
		if want := time.Duration(vals.DrainTimeout) * time.Second; drain != want {
			t.Errorf("EDGE_DRAIN_TIMEOUT=%v, values say %v", drain, want)
		}
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds not set")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= drain+preStop {
		t.Errorf("terminationGracePeriodSeconds %v <= drain %v + preStop %v", grace, drain, preStop)
	}

	// Restrictive security context (container, else pod).
	sc, psc := c.SecurityContext, pod.SecurityContext
	if sc == nil || psc == nil {
		t.Fatal("pod or container securityContext missing")
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Error("runAsNonRoot is not true")
	}
	user := sc.RunAsUser
	if user == nil {
		user = psc.RunAsUser
	}
	if user == nil || *user != 65532 {
		t.Errorf("runAsUser %v, want 65532 (distroless nonroot)", user)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop ALL and add nothing", sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}

	// Requests and limits for CPU and memory.
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[res]; !ok || q.IsZero() {
			t.Errorf("no %s request", res)
		}
		if q, ok := c.Resources.Limits[res]; !ok || q.IsZero() {
			t.Errorf("no %s limit", res)
		}
	}

	// No literal env values at all: settings come from the ConfigMap,
	// secrets from secretKeyRef.
	for _, e := range c.Env {
		if e.Value != "" {
			t.Errorf("env %s has a literal value", e.Name)
		}
		if slices.Contains(secretEnv, e.Name) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s does not use secretKeyRef", e.Name)
		}
	}
	for _, name := range secretEnv {
		if _, ok := env[name]; ok {
			t.Errorf("secret %s is in the ConfigMap", name)
		}
	}

	// Every file variable names a file of a read-only secret volume.
	for _, name := range fileEnv {
		if p, ok := env[name]; ok {
			checkMountedFile(t, pod, c, name, p)
		}
	}
	if p, ok := env["DISPATCHER_ROUTES_FILE"]; ok {
		if component != "dispatcher" {
			t.Errorf("the %s gets DISPATCHER_ROUTES_FILE", component)
		}
		checkRoutesFile(t, pod, c, p)
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable", m.Name)
		}
	}

	// Rolled on config and secret changes.
	ann := d.Spec.Template.Annotations
	for _, key := range []string{"checksum/config", "checksum/secret"} {
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(ann[key]) {
			t.Errorf("annotation %s=%q, want a sha256", key, ann[key])
		}
	}

	// Spread over zones and nodes without blocking scheduling.
	if vals.TopologySpread.Enabled {
		keys := map[string]bool{}
		for _, tsc := range pod.TopologySpreadConstraints {
			keys[tsc.TopologyKey] = true
			if string(tsc.WhenUnsatisfiable) != vals.TopologySpread.WhenUnsatisfiable {
				t.Errorf("topology spread %s: %s, values say %s", tsc.TopologyKey, tsc.WhenUnsatisfiable, vals.TopologySpread.WhenUnsatisfiable)
			}
			if tsc.LabelSelector == nil || !selects(tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels) {
				t.Errorf("topology spread %s does not select the pods", tsc.TopologyKey)
			}
		}
		if !keys["topology.kubernetes.io/zone"] || !keys["kubernetes.io/hostname"] {
			t.Errorf("topology spread keys %v, want zone and hostname", keys)
		}
	} else if len(pod.TopologySpreadConstraints) > 0 {
		t.Error("topology spread rendered while disabled")
	}

	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Error("the Deployment's selector does not select its pods")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the API token is mounted; wsgate does not use the Kubernetes API")
	}
}

// checkEnvNames checks that the chart sets only variables the services
// know (.env.example) besides those the values add through extraEnv: a
// misspelt name would be silently ignored by the service.
func checkEnvNames(t *testing.T, r *rendered, component string, known []string) {
	t.Helper()
	names := slices.Collect(maps.Keys(r.env(t, component)))
	for _, e := range r.container(t, component).Env {
		names = append(names, e.Name)
	}
	for _, name := range names {
		_, extra := r.values.ExtraEnv[name]
		_, own := r.values.component(component).ExtraEnv[name]
		if !slices.Contains(known, name) && !extra && !own {
			t.Errorf("%s is set but is not a variable of %s", name, envExample)
		}
	}
}

// checkMountedFile checks that path is a file of a secret volume mounted
// read-only in c.
func checkMountedFile(t *testing.T, pod corev1.PodSpec, c *corev1.Container, name, p string) {
	t.Helper()
	dir, file := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: %s is mounted writable", name, dir)
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, item := range v.Secret.Items {
				if item.Path == file {
					return
				}
			}
		}
	}
	t.Errorf("%s=%q is no file of a mounted secret volume", name, p)
}

// checkRoutesFile checks that path (DISPATCHER_ROUTES_FILE) is the file of a
// ConfigMap volume mounted read-only in c.
func checkRoutesFile(t *testing.T, pod corev1.PodSpec, c *corev1.Container, p string) {
	t.Helper()
	dir, file := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir || !m.ReadOnly {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			for _, item := range v.ConfigMap.Items {
				if item.Path == file {
					return
				}
			}
		}
	}
	t.Errorf("DISPATCHER_ROUTES_FILE=%q is no file of a ConfigMap volume mounted read-only", p)
}

// checkOptionalObjects checks that HPA, PDB and Service follow the values.
func checkOptionalObjects(t *testing.T, r *rendered, component string) {
	t.Helper()
	d := r.deployments[component]
	vals := r.values.component(component)

	hpa := r.hpas[component]
	switch {
	case vals.Autoscaling.Enabled && hpa == nil:
		t.Error("autoscaling enabled but no HPA")
	case !vals.Autoscaling.Enabled && hpa != nil:
		t.Error("autoscaling disabled but an HPA is rendered")
	case hpa != nil:
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name {
			t.Errorf("HPA targets %s/%s, want Deployment/%s", ref.Kind, ref.Name, d.Name)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != vals.Autoscaling.MinReplicas || hpa.Spec.MaxReplicas != vals.Autoscaling.MaxReplicas {
			t.Errorf("HPA replicas %v-%d, values say %d-%d", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas, vals.Autoscaling.MinReplicas, vals.Autoscaling.MaxReplicas)
		}
		if len(hpa.Spec.Metrics) == 0 {
			t.Error("HPA without metrics")
		}
		if d.Spec.Replicas != nil {
			t.Error("the Deployment sets replicas while the HPA owns them")
		}
	default:
		if d.Spec.Replicas == nil || int(*d.Spec.Replicas) != vals.Replicas {
			t.Errorf("replicas %v, values say %d", d.Spec.Replicas, vals.Replicas)
		}
	}

	pdb := r.pdbs[component]
	switch {
	case vals.PDB.Enabled && pdb == nil:
		t.Error("pdb enabled but no PodDisruptionBudget")
	case !vals.PDB.Enabled && pdb != nil:
		t.Error("pdb disabled but a PodDisruptionBudget is rendered")
	case pdb != nil:
		if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Error("the PodDisruptionBudget needs exactly one of minAvailable and maxUnavailable")
		}
		if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Error("the PodDisruptionBudget does not select the pods")
		}
	}

	svc := r.services[component]
	// The dispatcher's Service also carries the HTTP send API, on whenever
	// it has keys (docs/MIGRATING.md calls http://<release>-dispatcher:8081).
	wantSvc := component == "edge" || vals.Service.Enabled || r.values.Metrics.ServiceMonitor.Enabled ||
		component == "dispatcher" && r.values.sendAPIOn()
	switch {
	case wantSvc && svc == nil:
		t.Error("no Service")
	case !wantSvc && svc != nil:
		t.Error("a Service is rendered while not asked for")
	case svc != nil:
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "http" || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
			t.Errorf("Service ports %+v, want one named http targeting http", svc.Spec.Ports)
		}
		if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
			t.Error("the Service does not select the pods")
		}
	}
}

// checkSecrets checks where the secrets live and that none is in clear text.
func checkSecrets(t *testing.T, r *rendered) {
	t.Helper()
	v := r.values
	wantName := releaseName
	if v.ExistingSecret != "" {
		wantName = v.ExistingSecret
		if len(r.secrets) != 0 {
			t.Errorf("existingSecret is set, yet %d Secret(s) rendered", len(r.secrets))
		}
	} else {
		if len(r.inlineSecretsOrEmpty()) > 0 && len(r.secrets) != 1 {
			t.Errorf("%d Secrets rendered, want 1", len(r.secrets))
		}
		for _, s := range r.secrets {
			wantName = s.Name
		}
	}
	var secretData map[string][]byte
	if len(r.secrets) == 1 {
		secretData = r.secrets[0].Data
	}
	for _, component := range components {
		pod := r.deployments[component].Spec.Template.Spec
		for _, e := range r.container(t, component).Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != wantName {
				t.Errorf("%s %s: secretKeyRef to %q, want %q", component, e.Name, ref.Name, wantName)
			}
			if secretData != nil {
				if _, ok := secretData[ref.Key]; !ok {
					t.Errorf("%s %s: key %q is not in the Secret", component, e.Name, ref.Key)
				}
			}
		}
		for _, vol := range pod.Volumes {
			if vol.Secret == nil {
				continue
			}
			if vol.Secret.SecretName != wantName && vol.Secret.SecretName != v.Nats.TLS.SecretName {
				t.Errorf("%s volume %s: Secret %q, want %q", component, vol.Name, vol.Secret.SecretName, wantName)
			}
		}
	}
	for _, s := range v.inlineSecrets() {
		for id, doc := range r.docs {
			if strings.HasPrefix(id, "Secret/") {
				continue
			}
			if strings.Contains(doc, s) || strings.Contains(doc, firstLine(s)) {
				t.Errorf("%s holds a secret in clear text", id)
			}
		}
		if v.ExistingSecret != "" {
			for id, doc := range r.docs {
				if strings.Contains(doc, s) || strings.Contains(doc, firstLine(s)) {
					t.Errorf("%s holds a secret value although existingSecret is set", id)
				}
			}
		}
	}
}

// sendAPIOn reports whether the dispatcher gets API keys, which turn its HTTP
// send API on: from dispatcher.api.keys, or with existingSecret from
// existingSecretKeys.dispatcherApiKeys.
func (v *chartValues) sendAPIOn() bool {
	if v.ExistingSecret != "" {
		return v.ExistingSecretKeys["dispatcherApiKeys"] != ""
	}
	return len(v.Dispatcher.API.Keys) > 0
}

// inlineSecretsOrEmpty is inlineSecrets of the values (without existingSecret).
func (r *rendered) inlineSecretsOrEmpty() []string {
	if r.values.ExistingSecret != "" {
		return nil
	}
	return r.values.inlineSecrets()
}

// firstLine returns the first non-header line of a multi-line secret (the
// JWT or seed of a .creds file), or s itself.
func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "---") {
			return line
		}
	}
	return s
}

// checkIngress checks the Ingress against the values.
func checkIngress(t *testing.T, r *rendered) {
	t.Helper()
	ing := r.values.Edge.Ingress
	if !ing.Enabled {
		if len(r.ingresses) != 0 {
			t.Error("an Ingress is rendered while disabled")
		}
		return
	}
	if len(r.ingresses) != 1 {
		t.Fatalf("%d Ingresses, want 1", len(r.ingresses))
	}
	got := r.ingresses[0]
	for k, v := range ing.Annotations {
		if got.Annotations[k] != v {
			t.Errorf("Ingress annotation %s=%q, want %q", k, got.Annotations[k], v)
		}
	}
	wantPaths := ing.Paths
	if len(wantPaths) == 0 {
		wantPaths = append([]string{r.values.Edge.Path}, jsClientPaths(t)...)
	}
	if len(got.Spec.Rules) != len(ing.Hosts) {
		t.Errorf("%d Ingress rules, want one per host (%d)", len(got.Spec.Rules), len(ing.Hosts))
	}
	for _, rule := range got.Spec.Rules {
		var paths []string
		for _, p := range rule.HTTP.Paths {
			paths = append(paths, p.Path)
			b := p.Backend.Service
			if b == nil || b.Name != r.services["edge"].Name || b.Port.Name != "http" {
				t.Errorf("Ingress path %s: backend %+v, want the edge Service's port http", p.Path, b)
			}
		}
		if !slices.Equal(paths, wantPaths) {
			t.Errorf("Ingress %s paths %v, want %v", rule.Host, paths, wantPaths)
		}
	}
}

// checkServiceMonitors checks the ServiceMonitors against the values.
func checkServiceMonitors(t *testing.T, r *rendered) {
	t.Helper()
	if !r.values.Metrics.ServiceMonitor.Enabled {
		if len(r.serviceMonitors) != 0 {
			t.Error("a ServiceMonitor is rendered while disabled")
		}
		return
	}
	if len(r.serviceMonitors) != 2 {
		t.Fatalf("%d ServiceMonitors, want one per component", len(r.serviceMonitors))
	}
	for _, sm := range r.serviceMonitors {
		if sm["apiVersion"] != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %v", sm["apiVersion"])
		}
		spec, _ := sm["spec"].(map[string]any)
		eps, _ := spec["endpoints"].([]any)
		if len(eps) != 1 {
			t.Fatalf("ServiceMonitor endpoints %v", spec["endpoints"])
		}
		ep, _ := eps[0].(map[string]any)
		if ep["port"] != "http" || ep["path"] != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %v, want port http path /metrics", ep)
		}
	}
}

// checkServiceAccount checks that the pods run as the rendered ServiceAccount.
func checkServiceAccount(t *testing.T, r *rendered) {
	t.Helper()
	if !r.values.ServiceAccount.Create {
		return
	}
	if len(r.serviceAccounts) != 1 {
		t.Fatalf("%d ServiceAccounts, want 1", len(r.serviceAccounts))
	}
	for _, c := range components {
		if got := r.deployments[c].Spec.Template.Spec.ServiceAccountName; got != r.serviceAccounts[0].Name {
			t.Errorf("%s runs as %q, want %q", c, got, r.serviceAccounts[0].Name)
		}
	}
}

// jsClientPaths returns the paths the edge serves the JS client's files
// under (client.js, client.mjs, the SharedWorker script, ...), read from its
// source: the Ingress must route every one of them by default.
func jsClientPaths(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(edgeServer)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, m := range regexp.MustCompile(`mux\.Handle\("GET (/[^"]+)", client\)`).FindAllSubmatch(src, -1) {
		paths = append(paths, string(m[1]))
	}
	if len(paths) < 3 {
		t.Fatalf("%s: found only the JS client paths %v", edgeServer, paths)
	}
	return paths
}

// selects reports whether every selector label is on the pod.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestExistingSecret checks the existingSecret case by name: no Secret, and
// every reference (env and mounted file) points at the given Secret and keys.
func TestExistingSecret(t *testing.T) {
	r := mustRender(t, readValues(t, valuesFile{path: filepath.Join(chartDir, "ci", "existing-secret-values.yaml")}))
	if len(r.secrets) != 0 {
		t.Fatalf("%d Secrets rendered with existingSecret", len(r.secrets))
	}
	refs := map[string]string{}
	for _, e := range r.container(t, "edge").Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	want := map[string]string{"EDGE_JWT_SECRET": "wsgate-secrets/jwt-hmac", "NATS_PASSWORD": "wsgate-secrets/nats-pass"}
	if !maps.Equal(refs, want) {
		t.Errorf("edge secret refs %v, want %v", refs, want)
	}
	// A key the user chose must be there: no optional reference hides a typo.
	for _, c := range components {
		for _, e := range r.container(t, c).Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional {
				t.Errorf("%s %s: optional secretKeyRef to a key set in existingSecretKeys", c, e.Name)
			}
		}
	}
	if got := r.env(t, "dispatcher")["NATS_CREDS"]; got != "/etc/wsgate/secrets/nats.creds" {
		t.Errorf("dispatcher NATS_CREDS=%q", got)
	}
	for _, v := range r.deployments["dispatcher"].Spec.Template.Spec.Volumes {
		if v.Secret != nil && (v.Secret.SecretName != "wsgate-secrets" || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "user.creds") {
			t.Errorf("dispatcher secret volume %+v, want wsgate-secrets key user.creds", v.Secret)
		}
	}
	refs = map[string]string{}
	for _, e := range r.container(t, "dispatcher").Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	want = map[string]string{"NATS_PASSWORD": "wsgate-secrets/nats-pass",
		"DISPATCHER_API_KEYS": "wsgate-secrets/send-api-keys", "DISPATCHER_ROUTES_SECRET": "wsgate-secrets/routes-hmac"}
	if !maps.Equal(refs, want) {
		t.Errorf("dispatcher secret refs %v, want %v (and never the JWT secret)", refs, want)
	}
	// The routes file comes from the ConfigMap given, under its key.
	if got := r.env(t, "dispatcher")["DISPATCHER_ROUTES_FILE"]; got != "/etc/wsgate/routes/routes.json" {
		t.Errorf("dispatcher DISPATCHER_ROUTES_FILE=%q", got)
	}
	if _, ok := r.configMaps["wsgate-dispatcher-routes"]; ok {
		t.Error("a routes ConfigMap is rendered although routes.existingConfigMap is set")
	}
	found := false
	for _, v := range r.deployments["dispatcher"].Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "app-routes" && len(v.ConfigMap.Items) == 1 && v.ConfigMap.Items[0].Key == "routes.json" {
			found = true
		}
	}
	if !found {
		t.Error("no volume of ConfigMap app-routes with key routes.json")
	}
}

// TestExistingSecretDefaultJWTKeyIsOptional checks existingSecretKeys.jwtSecret's
// default: an existingSecret without the key "jwt-secret" (clients
// authenticated by JWKS, a public key, the callout or anonymously) must not
// keep the edge from starting (CreateContainerConfigError), while a Secret
// that holds it still gives the edge EDGE_JWT_SECRET; "" reads nothing.
func TestExistingSecretDefaultJWTKeyIsOptional(t *testing.T) {
	jwtRef := func(r *rendered) *corev1.SecretKeySelector {
		for _, e := range r.container(t, "edge").Env {
			if e.Name == "EDGE_JWT_SECRET" && e.ValueFrom != nil {
				return e.ValueFrom.SecretKeyRef
			}
		}
		return nil
	}
	r := mustRender(t, map[string]any{
		"existingSecret": "app-secrets",
		"edge":           map[string]any{"jwt": map[string]any{"jwksUrl": "https://auth.example.com/jwks.json"}},
	})
	ref := jwtRef(r)
	if ref == nil || ref.Name != "app-secrets" || ref.Key != "jwt-secret" || ref.Optional == nil || !*ref.Optional {
		t.Errorf("EDGE_JWT_SECRET from %+v, want app-secrets/jwt-secret with optional: true", ref)
	}
	for _, e := range r.container(t, "dispatcher").Env {
		if e.Name == "EDGE_JWT_SECRET" {
			t.Error("the dispatcher gets EDGE_JWT_SECRET")
		}
	}
	r = mustRender(t, map[string]any{
		"existingSecret":     "app-secrets",
		"existingSecretKeys": map[string]any{"jwtSecret": ""},
		"edge":               map[string]any{"allowAnonymous": true},
	})
	if ref := jwtRef(r); ref != nil {
		t.Errorf("EDGE_JWT_SECRET from %+v although existingSecretKeys.jwtSecret is empty", ref)
	}
	// Without existingSecret the chart's own Secret holds the key whenever
	// it is referenced: never optional.
	r = mustRender(t, map[string]any{"edge": map[string]any{"jwt": map[string]any{"secret": "s3cret-for-the-test"}}})
	if ref := jwtRef(r); ref == nil || ref.Optional != nil {
		t.Errorf("EDGE_JWT_SECRET from %+v, want the chart's Secret, not optional", ref)
	}
}

// TestDispatcherServiceFollowsSendAPI checks that the dispatcher's Service is
// rendered whenever its HTTP send API is on (API keys from the values or from
// existingSecret): docs/MIGRATING.md has applications call
// http://<release>-dispatcher:8081.
func TestDispatcherServiceFollowsSendAPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want bool
	}{
		{"no keys", nil, false},
		{"api.keys", map[string]any{"dispatcher": map[string]any{"api": map[string]any{"keys": []any{"send-api-key-0123456789abcdef"}}}}, true},
		{"existingSecret key", map[string]any{"existingSecret": "app-secrets", "existingSecretKeys": map[string]any{"dispatcherApiKeys": "api-keys"}}, true},
		{"existingSecret without the key", map[string]any{"existingSecret": "app-secrets",
			"dispatcher": map[string]any{"api": map[string]any{"keys": []any{"ignored-with-existing-secret"}}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := copyMap(tc.vals)
			vals["edge"] = map[string]any{"allowAnonymous": true}
			r := mustRender(t, vals)
			svc := r.services["dispatcher"]
			if (svc != nil) != tc.want {
				t.Fatalf("dispatcher Service rendered: %v, want %v", svc != nil, tc.want)
			}
			if svc == nil {
				return
			}
			if svc.Name != "wsgate-dispatcher" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8081 {
				t.Errorf("dispatcher Service %s ports %+v, want wsgate-dispatcher:8081", svc.Name, svc.Spec.Ports)
			}
			checkOptionalObjects(t, r, "dispatcher")
		})
	}
}

// TestExtraEnvNumbers checks that numbers in extraEnv, as a values file
// gives them (float64), reach the ConfigMaps as the services parse them:
// integers in plain digits however large (strconv.ParseInt refuses
// "2.097152e+06"), other values as written.
func TestExtraEnvNumbers(t *testing.T) {
	vals, err := chartutil.ReadValues([]byte(`
extraEnv:
  GOMEMLIMIT: 536870912
  SHARED_SMALL: 42
  SHARED_HUGE: 9007199254740992
  SHARED_FRACTION: 0.25
  SHARED_BIG_FRACTION: 1234567.5
  SHARED_STRING: "2.5e+06"
  SHARED_BOOL: true
edge:
  allowAnonymous: true
  rateLimit:
    perSecond: 2000000
  extraEnv:
    EDGE_MAX_HEADER_BYTES: 1048576
dispatcher:
  extraEnv:
    DISPATCHER_API_MAX_BODY: 2097152
    NEGATIVE: -3000000
`))
	if err != nil {
		t.Fatal(err)
	}
	r := mustRender(t, vals.AsMap())
	shared := map[string]string{
		"GOMEMLIMIT":          "536870912",
		"SHARED_SMALL":        "42",
		"SHARED_HUGE":         "9007199254740992",
		"SHARED_FRACTION":     "0.25",
		"SHARED_BIG_FRACTION": "1.2345675e+06", // not an integer: left as toString prints it
		"SHARED_STRING":       "2.5e+06",
		"SHARED_BOOL":         "true",
	}
	for c, want := range map[string]map[string]string{
		"edge":       {"EDGE_MAX_HEADER_BYTES": "1048576", "EDGE_RATE_LIMIT": "2000000"},
		"dispatcher": {"DISPATCHER_API_MAX_BODY": "2097152", "NEGATIVE": "-3000000"},
	} {
		env := r.env(t, c)
		maps.Copy(want, shared)
		for name, v := range want {
			if env[name] != v {
				t.Errorf("%s: %s=%q, want %q", c, name, env[name], v)
			}
		}
	}
	// --set gives int64: unchanged.
	r = mustRender(t, map[string]any{"edge": map[string]any{"allowAnonymous": true},
		"dispatcher": map[string]any{"extraEnv": map[string]any{"DISPATCHER_API_MAX_BODY": int64(2097152)}}})
	if got := r.env(t, "dispatcher")["DISPATCHER_API_MAX_BODY"]; got != "2097152" {
		t.Errorf("--set DISPATCHER_API_MAX_BODY=2097152 renders %q", got)
	}
}

// TestDispatcherRoutesAndAPIKeys checks the dispatcher's typed integration
// values: the routes are rendered into a ConfigMap that the dispatcher
// mounts read-only as DISPATCHER_ROUTES_FILE, and rolls on; the API keys and
// the routes secret live in the chart's Secret and reach the dispatcher
// only, through secretKeyRef.
func TestDispatcherRoutesAndAPIKeys(t *testing.T) {
	vals := readValues(t, valuesFile{path: filepath.Join(chartDir, "ci", "dispatcher-routes-values.yaml")})
	r := mustRender(t, vals)
	env := r.env(t, "dispatcher")
	if got := env["DISPATCHER_ROUTES_FILE"]; got != "/etc/wsgate/routes/routes.yaml" {
		t.Fatalf("DISPATCHER_ROUTES_FILE=%q", got)
	}
	if _, ok := r.env(t, "edge")["DISPATCHER_ROUTES_FILE"]; ok {
		t.Error("the edge gets DISPATCHER_ROUTES_FILE")
	}
	cm, ok := r.configMaps["wsgate-dispatcher-routes"]
	if !ok {
		t.Fatal("no routes ConfigMap wsgate-dispatcher-routes")
	}
	var file struct {
		Routes []map[string]any `json:"routes"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["routes.yaml"]), &file); err != nil {
		t.Fatalf("routes.yaml: %v\n%s", err, cm.Data["routes.yaml"])
	}
	wantRoutes := []map[string]any{
		{"action": "hello", "url": "http://app.default.svc/ws/hello.php"},
		{"prefix": "shop/", "url": "http://shop.default.svc/ws", "timeout": "2s", "retries": float64(2), "idempotent": true},
	}
	if fmt.Sprint(file.Routes) != fmt.Sprint(wantRoutes) {
		t.Errorf("routes.yaml routes %v, want %v", file.Routes, wantRoutes)
	}
	if strings.Contains(cm.Data["routes.yaml"], "routes-hmac-secret") {
		t.Error("the routes file holds the routes secret")
	}

	secretRefs := map[string]string{}
	for _, e := range r.container(t, "dispatcher").Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretRefs[e.Name] = e.ValueFrom.SecretKeyRef.Key
		}
	}
	if len(r.secrets) != 1 {
		t.Fatalf("%d Secrets, want 1", len(r.secrets))
	}
	data := r.secrets[0].Data
	for name, want := range map[string]string{
		"DISPATCHER_API_KEYS":      "send-api-key-0123456789abcdef,send-api-key-rotated-fedcba9876",
		"DISPATCHER_ROUTES_SECRET": "routes-hmac-secret-0123456789",
	} {
		key, ok := secretRefs[name]
		if !ok {
			t.Errorf("the dispatcher does not read %s from the Secret", name)
			continue
		}
		if got := string(data[key]); got != want {
			t.Errorf("%s: the Secret holds %q under %q, want %q", name, got, key, want)
		}
	}
	for _, e := range r.container(t, "edge").Env {
		if strings.HasPrefix(e.Name, "DISPATCHER_") {
			t.Errorf("the edge gets %s", e.Name)
		}
	}

	// A changed route rolls the dispatcher, not the edge.
	changed := copyMap(vals)
	d := copyMap(changed["dispatcher"].(map[string]any))
	routes := copyMap(d["routes"].(map[string]any))
	routes["items"] = []any{map[string]any{"action": "hello", "url": "http://other.default.svc/hello"}}
	d["routes"], changed["dispatcher"] = routes, d
	r2 := mustRender(t, changed)
	ann := func(r *rendered, c string) string {
		return r.deployments[c].Spec.Template.Annotations["checksum/config"]
	}
	if ann(r, "dispatcher") == ann(r2, "dispatcher") {
		t.Error("dispatcher checksum/config did not change with a route")
	}
	if ann(r, "edge") != ann(r2, "edge") {
		t.Error("edge checksum/config changed with a route")
	}
}

// TestGracePeriodFollowsDrainTimeout checks the computed grace period.
func TestGracePeriodFollowsDrainTimeout(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		drain, preStop, margin int
	}{
		{"defaults", 10, 5, 15},
		{"long drain", 300, 5, 15},
		{"no drain no hook", 0, 0, 13},
		{"long hook", 10, 30, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, map[string]any{"edge": map[string]any{
				"drainTimeout": tc.drain, "preStopSleepSeconds": tc.preStop, "terminationGraceMarginSeconds": tc.margin,
			}})
			grace := *r.deployments["edge"].Spec.Template.Spec.TerminationGracePeriodSeconds
			if want := int64(tc.drain + tc.preStop + tc.margin); grace != want {
				t.Errorf("grace %d, want %d", grace, want)
			}
			if got := r.env(t, "edge")["EDGE_DRAIN_TIMEOUT"]; got != fmt.Sprintf("%ds", tc.drain) {
				t.Errorf("EDGE_DRAIN_TIMEOUT=%q", got)
			}
			hook := r.container(t, "edge").Lifecycle
			if (hook != nil) != (tc.preStop > 0) {
				t.Errorf("preStop hook %+v with preStopSleepSeconds %d", hook, tc.preStop)
			}
		})
	}
}

// TestPreStopFollowsKubeVersion checks that the chart renders for clusters
// without the preStop sleep action (Helm's default capabilities among them:
// no kubeVersion constraint refuses them), gives them no hook and a grace
// period without the sleep, and says so in NOTES; 1.30 and later, managed
// clusters' pre-release versions included, get the sleep.
func TestPreStopFollowsKubeVersion(t *testing.T) {
	kv := func(version, minor string) *chartutil.KubeVersion {
		return &chartutil.KubeVersion{Version: version, Major: "1", Minor: minor}
	}
	const note = "has no built-in preStop"
	for _, tc := range []struct {
		name  string
		kube  *chartutil.KubeVersion
		sleep bool
	}{
		{"helm default", nil, false},
		{"1.29", kv("v1.29.9", "29"), false},
		{"1.30", kube130, true},
		{"1.30 eks", kv("v1.30.4-eks-a737599", "30"), true},
		{"1.33 gke", kv("v1.33.2-gke.1240000", "33"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := renderChartFor(t, nil, tc.kube)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			for _, c := range components {
				vals := r.values.component(c)
				hook := r.container(t, c).Lifecycle
				if got := hook != nil && hook.PreStop != nil && hook.PreStop.Sleep != nil; got != tc.sleep {
					t.Errorf("%s: preStop sleep hook %v, want %v: %+v", c, got, tc.sleep, hook)
				}
				drain := 20 // service.DrainTimeout, checked against the source by TestRenderInvariants
				if c == "edge" {
					drain = vals.DrainTimeout
				}
				want := int64(drain + vals.TerminationGraceMarginSeconds)
				if tc.sleep {
					want += int64(vals.PreStopSleepSeconds)
				}
				if got := *r.deployments[c].Spec.Template.Spec.TerminationGracePeriodSeconds; got != want {
					t.Errorf("%s: terminationGracePeriodSeconds %d, want %d", c, got, want)
				}
			}
			if got := strings.Contains(r.notes, note); got == tc.sleep {
				t.Errorf("NOTES say the cluster lacks the sleep action: %v, want %v:\n%s", got, !tc.sleep, r.notes)
			}
		})
	}
	// Without a sleep asked for, an old cluster loses nothing: no note.
	r, err := renderChartFor(t, map[string]any{
		"edge": map[string]any{"preStopSleepSeconds": 0}, "dispatcher": map[string]any{"preStopSleepSeconds": 0},
	}, nil)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if strings.Contains(r.notes, "preStop") {
		t.Errorf("NOTES mention preStop although no sleep is asked for:\n%s", r.notes)
	}
}

// TestDefaultsOptionalObjects checks what the defaults leave out, and that
// each switch brings its object.
func TestDefaultsOptionalObjects(t *testing.T) {
	r := mustRender(t, nil)
	if len(r.hpas) != 0 || len(r.ingresses) != 0 || len(r.serviceMonitors) != 0 || r.services["dispatcher"] != nil {
		t.Errorf("defaults render HPAs %d, Ingresses %d, ServiceMonitors %d, dispatcher Service %v",
			len(r.hpas), len(r.ingresses), len(r.serviceMonitors), r.services["dispatcher"] != nil)
	}
	if len(r.pdbs) != 2 {
		t.Errorf("defaults render %d PodDisruptionBudgets, want 2", len(r.pdbs))
	}
	if len(r.secrets) != 0 {
		t.Errorf("defaults render a Secret with nothing in it")
	}
	if !strings.Contains(r.notes, "WARNING: no way to authenticate clients") {
		t.Error("NOTES do not warn that the edge has no authentication configured")
	}

	r = mustRender(t, map[string]any{
		"edge":       map[string]any{"autoscaling": map[string]any{"enabled": true}, "ingress": map[string]any{"enabled": true}, "pdb": map[string]any{"enabled": false}},
		"dispatcher": map[string]any{"autoscaling": map[string]any{"enabled": true}, "pdb": map[string]any{"minAvailable": 1}},
		"metrics":    map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
	})
	if len(r.hpas) != 2 || len(r.ingresses) != 1 || len(r.serviceMonitors) != 2 || r.services["dispatcher"] == nil {
		t.Errorf("switched on: HPAs %d, Ingresses %d, ServiceMonitors %d, dispatcher Service %v",
			len(r.hpas), len(r.ingresses), len(r.serviceMonitors), r.services["dispatcher"] != nil)
	}
	if r.pdbs["edge"] != nil {
		t.Error("edge PDB rendered while disabled")
	}
	if p := r.pdbs["dispatcher"]; p == nil || p.Spec.MinAvailable == nil || p.Spec.MinAvailable.IntValue() != 1 || p.Spec.MaxUnavailable != nil {
		t.Errorf("dispatcher PDB %+v, want minAvailable 1 only", p)
	}
	if a := r.ingresses[0].Annotations; a["nginx.ingress.kubernetes.io/proxy-read-timeout"] != "3600" || a["nginx.ingress.kubernetes.io/proxy-send-timeout"] != "3600" {
		t.Errorf("Ingress annotations %v, want ingress-nginx timeouts of 3600", a)
	}
}

// TestChecksumFollowsConfig checks that a setting of one component rolls that
// component only, and that a secret change rolls both.
func TestChecksumFollowsConfig(t *testing.T) {
	ann := func(r *rendered, c, key string) string {
		return r.deployments[c].Spec.Template.Annotations[key]
	}
	base := mustRender(t, map[string]any{"edge": map[string]any{"jwt": map[string]any{"secret": "a"}}})
	edgeChange := mustRender(t, map[string]any{"edge": map[string]any{"maxConnections": 1000, "jwt": map[string]any{"secret": "a"}}})
	secretChange := mustRender(t, map[string]any{"edge": map[string]any{"jwt": map[string]any{"secret": "b"}}})
	if ann(base, "edge", "checksum/config") == ann(edgeChange, "edge", "checksum/config") {
		t.Error("edge checksum/config did not change with edge.maxConnections")
	}
	if ann(base, "dispatcher", "checksum/config") != ann(edgeChange, "dispatcher", "checksum/config") {
		t.Error("dispatcher checksum/config changed with an edge-only setting")
	}
	if ann(base, "edge", "checksum/secret") == ann(secretChange, "edge", "checksum/secret") {
		t.Error("checksum/secret did not change with the JWT secret")
	}
}

// TestSchemaRejectsBadValues checks that values.schema.json fails the render
// of wrong types, unknown keys and shadowing extraEnv entries.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string // in the error (the schema library's error names the
		// offending value; for propertyNames its location is not reliable)
	}{
		{"replicas not a number", map[string]any{"edge": map[string]any{"replicas": "two"}}, "replicas"},
		{"unknown key", map[string]any{"edge": map[string]any{"replica": 2}}, "replica"},
		{"unknown top-level key", map[string]any{"natsUrl": "nats://x:4222"}, "natsUrl"},
		{"port out of range", map[string]any{"edge": map[string]any{"port": 70000}}, "port"},
		{"log level", map[string]any{"log": map[string]any{"level": "verbose"}}, "level"},
		{"duration without unit", map[string]any{"edge": map[string]any{"authTimeout": "10"}}, "authTimeout"},
		{"drain timeout as duration", map[string]any{"edge": map[string]any{"drainTimeout": "10s"}}, "drainTimeout"},
		{"grace margin below the edge's shutdown", map[string]any{"edge": map[string]any{"terminationGraceMarginSeconds": 12}}, "terminationGraceMarginSeconds"},
		{"secret through extraEnv", map[string]any{"extraEnv": map[string]any{"EDGE_JWT_SECRET": "x"}}, "EDGE_JWT_SECRET"},
		{"typed variable through edge extraEnv", map[string]any{"edge": map[string]any{"extraEnv": map[string]any{"EDGE_DRAIN_TIMEOUT": "1s"}}}, "EDGE_DRAIN_TIMEOUT"},
		{"bad variable name", map[string]any{"dispatcher": map[string]any{"extraEnv": map[string]any{"NOT-A-NAME": "x"}}}, "NOT-A-NAME"},
		{"API keys through extraEnv", map[string]any{"dispatcher": map[string]any{"extraEnv": map[string]any{"DISPATCHER_API_KEYS": "k"}}}, "DISPATCHER_API_KEYS"},
		{"routes secret through extraEnv", map[string]any{"dispatcher": map[string]any{"extraEnv": map[string]any{"DISPATCHER_ROUTES_SECRET": "s"}}}, "DISPATCHER_ROUTES_SECRET"},
		{"routes file through extraEnv", map[string]any{"dispatcher": map[string]any{"extraEnv": map[string]any{"DISPATCHER_ROUTES_FILE": "/r.yaml"}}}, "DISPATCHER_ROUTES_FILE"},
		{"short API key", map[string]any{"dispatcher": map[string]any{"api": map[string]any{"keys": []any{"short"}}}}, "keys"},
		{"API keys as one string", map[string]any{"dispatcher": map[string]any{"api": map[string]any{"keys": "a-key-0123456789abcdef"}}}, "keys"},
		{"short routes secret", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{"secret": "short"}}}, "secret"},
		{"route with action and prefix", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"items": []any{map[string]any{"action": "a", "prefix": "b/", "url": "http://app/a"}}}}}, "items"},
		{"route without url", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"items": []any{map[string]any{"action": "a"}}}}}, "url"},
		{"route with too many retries", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"items": []any{map[string]any{"action": "a", "url": "http://app/a", "retries": 9}}}}}, "retries"},
		{"route with an unknown field", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"items": []any{map[string]any{"action": "a", "url": "http://app/a", "method": "GET"}}}}}, "method"},
		// Durations the services refuse when zero (edge config.Normalize).
		{"zero auth timeout", map[string]any{"edge": map[string]any{"authTimeout": "0"}}, "authTimeout"},
		{"zero auth timeout with unit", map[string]any{"edge": map[string]any{"authTimeout": "0s"}}, "authTimeout"},
		{"zero ping interval", map[string]any{"edge": map[string]any{"pingInterval": "0ms"}}, "pingInterval"},
		{"zero callout timeout", map[string]any{"edge": map[string]any{"authCallout": map[string]any{"timeout": "0"}}}, "timeout"},
		{"zero dedupe with inbound on", map[string]any{"inbound": map[string]any{"mode": "memory", "dedupe": "0"}}, "dedupe"},
		{"zero lease with presence on", map[string]any{"presence": map[string]any{"mode": "file", "lease": "0s"}}, "lease"},
		{"zero burst with a rate limit", map[string]any{"edge": map[string]any{"rateLimit": map[string]any{"perSecond": 50, "burst": 0}}}, "burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, tc.vals)
			if err == nil {
				t.Fatal("render succeeded")
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name the schema and %q: %v", tc.want, err)
			}
		})
	}
}

// TestTemplateRejectsBadCombinations checks the fail/required messages of
// what the schema cannot express.
func TestTemplateRejectsBadCombinations(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"no NATS URL", map[string]any{"nats": map[string]any{"url": ""}}, "nats.url is required"},
		{"client cert without key", map[string]any{"nats": map[string]any{"tls": map[string]any{"secretName": "t", "certKey": "tls.crt"}}}, "must be set together"},
		{"TLS keys without Secret", map[string]any{"nats": map[string]any{"tls": map[string]any{"certKey": "tls.crt", "keyKey": "tls.key"}}}, "need nats.tls.secretName"},
		{"creds and seed", map[string]any{"nats": map[string]any{"credentials": "c", "nkeySeed": "s"}}, "only one of nats.credentials and nats.nkeySeed"},
		{"routes without secret", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"items": []any{map[string]any{"action": "a", "url": "http://app/a"}}}}}, "DISPATCHER_ROUTES_SECRET signs"},
		{"routes ConfigMap without secret", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"existingConfigMap": "r"}}}, "dispatcher.routes need dispatcher.routes.secret"},
		{"routes items and ConfigMap", map[string]any{"dispatcher": map[string]any{"routes": map[string]any{
			"existingConfigMap": "r", "secret": "routes-secret-0123456789",
			"items": []any{map[string]any{"action": "a", "url": "http://app/a"}}}}}, "only one of dispatcher.routes.items and dispatcher.routes.existingConfigMap"},
		// One id for every replica: they would end each other's connections.
		{"EDGE_ID in edge.extraEnv", map[string]any{"edge": map[string]any{"extraEnv": map[string]any{"EDGE_ID": "edge-1"}}}, "edge.extraEnv.EDGE_ID cannot be set"},
		{"EDGE_ID in extraEnv", map[string]any{"extraEnv": map[string]any{"EDGE_ID": "edge-1"}}, "extraEnv.EDGE_ID cannot be set"},
		// At least 1s, which no schema pattern can say of a Go duration.
		{"sub-second lease", map[string]any{"presence": map[string]any{"mode": "memory", "lease": "999ms"}}, "presence.lease \"999ms\" is under 1s"},
		{"sub-second lease in parts", map[string]any{"presence": map[string]any{"mode": "memory", "lease": "0.5s499ms"}}, "presence.lease"},
		{"sub-second ack wait", map[string]any{"inbound": map[string]any{"mode": "file", "ackWait": "500ms"}}, "inbound.ackWait \"500ms\" is under 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestServicesAcceptedValuesRender checks that the schema and the templates
// refuse no value the services accept: zero durations and burst where the
// setting is off, and sums of sub-second parts reaching 1s.
func TestServicesAcceptedValuesRender(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"zero dedupe and ack wait with inbound off", map[string]any{"inbound": map[string]any{"mode": "off", "dedupe": "0", "ackWait": "100ms"}}},
		{"zero lease with presence off", map[string]any{"presence": map[string]any{"mode": "off", "lease": "0"}}},
		{"zero burst without a rate limit", map[string]any{"edge": map[string]any{"rateLimit": map[string]any{"perSecond": 0, "burst": 0}}}},
		{"one-second lease", map[string]any{"presence": map[string]any{"mode": "memory", "lease": "1s"}}},
		{"lease of sub-second parts", map[string]any{"presence": map[string]any{"mode": "memory", "lease": "0.5s500ms"}}},
		{"ack wait in milliseconds", map[string]any{"inbound": map[string]any{"mode": "memory", "ackWait": "1500ms", "dedupe": "1ms"}}},
		// The dispatcher SDK reads 0 as its default ack wait (30s).
		{"zero ack wait", map[string]any{"inbound": map[string]any{"mode": "file", "ackWait": "0"}}},
		{"short positive durations", map[string]any{"edge": map[string]any{"authTimeout": "1ns", "pingInterval": "0.5s", "authCallout": map[string]any{"timeout": "10ms"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := copyMap(tc.vals)
			edge, _ := vals["edge"].(map[string]any)
			if edge == nil {
				edge = map[string]any{}
			}
			edge["allowAnonymous"] = true
			vals["edge"] = edge
			if _, err := renderChart(t, vals); err != nil {
				t.Errorf("render: %v", err)
			}
		})
	}
}

// TestEveryEnvExampleVariableIsReachable checks that every variable of
// .env.example reaches the right container: through a typed value in one of
// the values files, or else through extraEnv.
func TestEveryEnvExampleVariableIsReachable(t *testing.T) {
	names := envExampleNames(t)
	seen := map[string]map[string]bool{"edge": {}, "dispatcher": {}}
	for _, f := range valuesFiles(t) {
		r := mustRender(t, readValues(t, f))
		for _, c := range components {
			for name := range r.env(t, c) {
				seen[c][name] = true
			}
			for _, e := range r.container(t, c).Env {
				seen[c][e.Name] = true
			}
		}
	}
	for _, name := range names {
		if msg, ok := notSettable[name]; ok {
			_, err := renderChart(t, map[string]any{"edge": map[string]any{"extraEnv": map[string]any{name: "x"}}})
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Errorf("%s through edge.extraEnv: error %v, want one containing %q", name, err, msg)
			}
			continue
		}
		want := components
		switch {
		case strings.HasPrefix(name, "EDGE_"):
			want = []string{"edge"}
		case strings.HasPrefix(name, "DISPATCHER_"):
			want = []string{"dispatcher"}
		}
		for _, c := range want {
			if seen[c][name] {
				continue
			}
			vals := map[string]any{"extraEnv": map[string]any{name: "x"}}
			if len(want) == 1 {
				vals = map[string]any{c: map[string]any{"extraEnv": map[string]any{name: "x"}}}
			}
			r, err := renderChart(t, vals)
			if err != nil {
				t.Errorf("%s: set by no values file and not settable through extraEnv: %v", name, err)
				continue
			}
			if r.env(t, c)[name] != "x" {
				t.Errorf("%s: extraEnv does not reach the %s", name, c)
				continue
			}
			t.Logf("%s reaches the %s through extraEnv", name, c)
		}
	}
}

// notSettable are the variables of .env.example the chart deliberately
// leaves to their default, with the message refusing them in extraEnv:
// EDGE_ID defaults to the pod name, the one value that differs per replica.
var notSettable = map[string]string{"EDGE_ID": "EDGE_ID cannot be set"}

// envExampleNames returns the variable names of .env.example, set or
// commented out.
func envExampleNames(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(envExample)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m := re.FindStringSubmatch(s.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) < 20 {
		t.Fatalf("found only %d variables in %s", len(names), envExample)
	}
	return names
}

// dispatcherDrainTimeout reads the dispatcher's shutdown bound from its
// source, so that the chart's grace period cannot fall behind it.
func dispatcherDrainTimeout(t *testing.T) time.Duration {
	t.Helper()
	src, err := os.ReadFile(dispatcherService)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`DrainTimeout\s*=\s*(\d+)\s*\*\s*time\.Second`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("%s: no `DrainTimeout = N * time.Second`", dispatcherService)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return time.Duration(n) * time.Second
}

// TestNotes checks that NOTES tell how to connect and how to send.
func TestNotes(t *testing.T) {
	r := mustRender(t, map[string]any{"edge": map[string]any{"jwt": map[string]any{"secret": "x"}}})
	for _, want := range []string{"port-forward service/wsgate-edge 8080:80", "ws://127.0.0.1:8080/ws", "nats -s nats://127.0.0.1:4222 pub ws.send.user.42", "nats://nats:4222"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	if strings.Contains(r.notes, "WARNING") {
		t.Errorf("NOTES warn although a JWT secret is set:\n%s", r.notes)
	}
	r = mustRender(t, map[string]any{"edge": map[string]any{"allowAnonymous": true, "ingress": map[string]any{
		"enabled": true, "hosts": []any{"ws.example.com"}, "tls": []any{map[string]any{"secretName": "t", "hosts": []any{"ws.example.com"}}},
	}}})
	if !strings.Contains(r.notes, "wss://ws.example.com/ws") {
		t.Errorf("NOTES lack the Ingress URL:\n%s", r.notes)
	}
}

// copyMap deep-copies values, since rendering coalesces into its argument.
func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = copyMap(sub)
		}
		out[k] = v
	}
	return out
}
