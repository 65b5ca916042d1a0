package stack

import (
	"encoding/json"
	"testing"
)

func TestCentrifugoConfig(t *testing.T) {
	data, err := CentrifugoConfig(8123, "sec", "key", "http://127.0.0.1:9/rpc")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		Client struct {
			Token struct {
				HMAC string `json:"hmac_secret_key"`
			} `json:"token"`
		} `json:"client"`
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
		UsageStats struct {
			Disabled bool `json:"disabled"`
		} `json:"usage_stats"`
		Channel struct {
			Namespaces []struct {
				Name string `json:"name"`
			} `json:"namespaces"`
		} `json:"channel"`
		RPC struct {
			Proxy struct {
				Endpoint string `json:"endpoint"`
			} `json:"proxy"`
			WithoutNamespace struct {
				ProxyEnabled bool `json:"proxy_enabled"`
			} `json:"without_namespace"`
		} `json:"rpc"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.HTTPServer.Address != "127.0.0.1" || c.HTTPServer.Port != 8123 || c.Client.Token.HMAC != "sec" ||
		c.HTTPAPI.Key != "key" || !c.UsageStats.Disabled || len(c.Channel.Namespaces) != 2 ||
		c.RPC.Proxy.Endpoint != "http://127.0.0.1:9/rpc" || !c.RPC.WithoutNamespace.ProxyEnabled {
		t.Fatalf("config does not say what the run needs:\n%s", data)
	}
	data, _ = CentrifugoConfig(1, "s", "k", "")
	if json.Unmarshal(data, &map[string]any{}) != nil || json.Valid(data) == false {
		t.Fatal("config without RPC proxy is not JSON")
	}
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	if _, ok := m["rpc"]; ok {
		t.Fatal("no rpc section without an RPC backend")
	}
}

func TestLogField(t *testing.T) {
	match := logField("edge listening", "addr")
	if v, ok := match(`{"time":"x","level":"INFO","msg":"edge listening","addr":"127.0.0.1:4567"}`); !ok || v != "127.0.0.1:4567" {
		t.Fatalf("got %q %v", v, ok)
	}
	if _, ok := match(`{"msg":"edge starting"}`); ok {
		t.Fatal("matched another message")
	}
	if _, ok := match(`not json`); ok {
		t.Fatal("matched a non-JSON line")
	}
}
