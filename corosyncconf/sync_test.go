package corosyncconf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestConfigVersion(t *testing.T) {
	for conf, want := range map[string]uint64{
		"totem {\n  config_version: 7\n}\n":                       7,
		"totem {\n  config_version:12\n  version: 2\n}\n":         12,
		"# config_version: 99\ntotem {\n  config_version: 3\n}\n": 3, // upstream would say 99
		"totem {\n  version: 2 # config_version: 5\n}\n":          0,
		"logging {\n}\n": 0,
		"totem {\n  config_version: 99999999999999999999999\n}\n": 0,
	} {
		if got := ConfigVersion([]byte(conf)); got != want {
			t.Errorf("ConfigVersion(%q) = %d, want %d", conf, got, want)
		}
	}
}

func TestSync(t *testing.T) {
	host := filepath.Join(t.TempDir(), "corosync.conf")
	reloads := 0
	s := &Syncer{HostPath: host, Log: logrus.NewEntry(logrus.New()), Reload: func() error { reloads++; return nil }}
	v2 := []byte("totem {\n  config_version: 2\n}\n")
	v3 := []byte("totem {\n  config_version: 3\n}\n")

	s.Sync(v2, true) // no host file yet: written, but nothing to reload
	if got, _ := os.ReadFile(host); string(got) != string(v2) || reloads != 0 {
		t.Fatalf("first sync: %q, %d reloads", got, reloads)
	}
	if st, _ := os.Stat(host); st.Mode().Perm() != 0644 {
		t.Errorf("mode %o, want 644", st.Mode().Perm())
	}
	s.Sync(v3, true)
	if got, _ := os.ReadFile(host); string(got) != string(v3) || reloads != 1 {
		t.Fatalf("newer version: %q, %d reloads", got, reloads)
	}
	s.Sync(v2, true) // older than the host file: refused
	if got, _ := os.ReadFile(host); string(got) != string(v3) || reloads != 1 {
		t.Fatalf("older version: %q, %d reloads", got, reloads)
	}
	s.Sync(v3, true) // identical: nothing happens
	s.Sync([]byte("totem {\n}\n"), true)
	if reloads != 1 {
		t.Fatalf("%d reloads", reloads)
	}
	same := []byte("totem {\n  config_version: 3\n  token: 3000\n}\n")
	s.Sync(same, false) // same version, different content: written (upstream does), no reload
	if got, _ := os.ReadFile(host); string(got) != string(same) || reloads != 1 {
		t.Fatalf("same version: %q, %d reloads", got, reloads)
	}
}
