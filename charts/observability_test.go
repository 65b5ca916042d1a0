package charts_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDashboardAndAlerts_RenderedOnlyWhenEnabled checks that the Grafana
// dashboard ConfigMap and the PrometheusRule are opt-in, and that when on
// they carry the dashboard JSON and the alert rules the chart ships.
func TestDashboardAndAlerts_RenderedOnlyWhenEnabled(t *testing.T) {
	r := mustRender(t, nil)
	for name := range r.configMaps {
		if strings.HasSuffix(name, "-dashboard") {
			t.Errorf("defaults render the dashboard ConfigMap %s", name)
		}
	}
	if len(r.prometheusRules) != 0 {
		t.Errorf("defaults render %d PrometheusRules", len(r.prometheusRules))
	}

	r = mustRender(t, map[string]any{"metrics": map[string]any{
		"grafanaDashboard": map[string]any{"enabled": true, "annotations": map[string]any{"grafana_folder": "wsgate"}},
		"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "kps"},
			"additionalRules": []any{map[string]any{"alert": "Extra", "expr": "vector(1)"}}},
	}})
	var dash *struct {
		labels map[string]string
		data   string
	}
	for name, cm := range r.configMaps {
		if strings.HasSuffix(name, "-dashboard") {
			dash = &struct {
				labels map[string]string
				data   string
			}{cm.Labels, cm.Data["wsgate.json"]}
		}
	}
	if dash == nil {
		t.Fatal("no dashboard ConfigMap when metrics.grafanaDashboard.enabled")
	}
	if dash.labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard labels %v: Grafana's sidecar selects on grafana_dashboard=1", dash.labels)
	}
	shipped, err := os.ReadFile(filepath.Join(chartDir, "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(dash.data) != strings.TrimSpace(string(shipped)) {
		t.Error("the ConfigMap's wsgate.json differs from files/grafana-dashboard.json")
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(dash.data), &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 8 {
		t.Errorf("dashboard uid %q with %d panels", d.UID, len(d.Panels))
	}
	for _, p := range d.Panels {
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q has no title or no query", p.Title)
		}
	}

	if len(r.prometheusRules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(r.prometheusRules))
	}
	raw, _ := json.Marshal(r.prometheusRules[0])
	var rule struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert       string            `json:"alert"`
					Expr        string            `json:"expr"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	if rule.Metadata.Labels["release"] != "kps" {
		t.Errorf("PrometheusRule labels %v, want the configured release label", rule.Metadata.Labels)
	}
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, a := range g.Rules {
			alerts = append(alerts, a.Alert)
			if a.Expr == "" {
				t.Errorf("alert %s has no expression", a.Alert)
			}
		}
	}
	runbooks, err := os.ReadFile(filepath.Join("..", "docs", "RUNBOOKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := shippedAlerts(t)
	if got := strings.Join(alerts, ","); got != strings.Join(append(want, "Extra"), ",") {
		t.Errorf("alerts %s, want the shipped ones then the additional one", got)
	}
	for _, a := range want {
		if !strings.Contains(string(runbooks), "## "+a+"\n") {
			t.Errorf("docs/RUNBOOKS.md has no runbook for %s", a)
		}
	}
}

// shippedAlerts returns the names of the alerts in files/alerts.yaml.
func shippedAlerts(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []struct {
		Alert string `json:"alert"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
	}
	return names
}
