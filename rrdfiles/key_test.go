package rrdfiles

import "testing"

// Expected targets follow upstream status.c:update_rrd_data.
func TestParse(t *testing.T) {
	for _, c := range []struct{ key, value, file, want string }{
		{"pve2-node/n1", "100:0:1700000000:1:2:3:4:5:6:7:8:9:10:11:12\x00",
			"pve-node-9.0/n1", "1700000000:1:2:3:4:5:6:7:8:9:10:11:12:U:U:U:U:U:U:U"},
		{"pve-node-9.0/n1", "100:0:1700000000:1:2:3", "pve-node-9.0/n1", "1700000000:1:2:3"},
		{"pve-node-10.1/n1", "100:0:1700000000:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21",
			"pve-node-9.0/n1", "1700000000:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19"},
		{"pve2.3-vm/100", "5:vm:running:0:1700000000:1:2:3:4:5:6:7:8:9:10",
			"pve-vm-9.0/100", "1700000000:1:2:3:4:5:6:7:8:9:10:U:U:U:U:U:U:U"},
		{"pve-vm-9.0/100", "5:vm:running:0:1700000000:1", "pve-vm-9.0/100", "1700000000:1"},
		{"pve-vm-9.9/100", "5:vm:running:0:1700000000:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19",
			"pve-vm-9.0/100", "1700000000:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17"},
		{"pve2-storage/n1/local", "1700000000:10:5\x00junk", "pve-storage-9.0/n1/local", "1700000000:10:5"},
		{"pve-storage-9.0/n1/local", "1700000000:10:5", "pve-storage-9.0/n1/local", "1700000000:10:5"},
		{"pve-storage-9.1/n1/local", "1700000000:10:5:7:8", "pve-storage-9.0/n1/local", "1700000000:10:5"},
	} {
		got, err := parse(c.key, []byte(c.value))
		if err != nil || got.file != c.file || got.value != c.want {
			t.Errorf("parse(%q, %q) = %q %q %v, want %q %q", c.key, c.value, got.file, got.value, err, c.file, c.want)
		}
	}
}

func TestParseWrongKeys(t *testing.T) {
	for _, key := range []string{
		"", "pve2-node/", "pve2-node/a/b", "pve-node-9.0", "pve-node-9.0/", "pve2.3-vm/",
		"pve2.3-vm/1/2", "pve-vm-9.0", "pve2-storage/n1", "pve2-storage/n1/", "pve2-storage//local",
		"pve2-storage/n1/local/x", "pve-storage-9.0/n1", "pve2-vm/100", "foo/bar", "pve2.3-vm/..",
		"pve2-storage/../local",
	} {
		if got, err := parse(key, []byte("1700000000:1:2")); err == nil {
			t.Errorf("parse(%q) accepted: %+v", key, got)
		}
	}
}
