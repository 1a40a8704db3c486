package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Cluster nodes reach each other as root with keys: every node's key is collected in
// /etc/pve/priv/authorized_keys, which pmxcfs replicates, and each node's
// /root/.ssh/authorized_keys is a symlink to it.

func (h *host) clusterAuthorizedKeys() string { return h.pve("priv", "authorized_keys") }
func (h *host) rootAuthorizedKeys() string    { return filepath.Join(h.sshDir, "authorized_keys") }

// setupRootKey creates root's RSA key pair when it has none.
func (h *host) setupRootKey() error {
	priv := filepath.Join(h.sshDir, "id_rsa")
	if _, err := os.Stat(priv + ".pub"); err == nil {
		return nil
	}
	if err := os.MkdirAll(h.sshDir, 0o700); err != nil {
		return err
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-f", priv).CombinedOutput(); err != nil {
		return fmt.Errorf("unable to create ssh key '%s': %v %s", priv, err, out)
	}
	return nil
}

// linkAuthorizedKeys makes root's authorized_keys the cluster-wide file, importing what root
// had before (kept as authorized_keys.org until the next merge).
func (h *host) linkAuthorizedKeys() {
	os.Mkdir(h.pve("priv"), 0o700)
	cluster, root := h.clusterAuthorizedKeys(), h.rootAuthorizedKeys()
	imported := false
	if _, err := os.Stat(cluster); errors.Is(err, os.ErrNotExist) {
		old, _ := os.ReadFile(root)
		if f, err := os.OpenFile(cluster, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
			_, werr := f.Write(old)
			imported = f.Close() == nil && werr == nil
		}
	}
	if _, err := os.Stat(cluster); err != nil {
		h.warnf("can't create shared ssh key database '%s'\n", cluster)
	}
	if st, err := os.Lstat(root); err == nil && st.Mode().IsRegular() {
		if err := os.Rename(root, root+".org"); err != nil {
			h.warnf("rename %s failed - %v\n", root, err)
		}
	}
	if st, err := os.Lstat(root); err != nil || st.Mode()&os.ModeSymlink == 0 {
		os.Symlink(cluster, root)
	}
	if st, err := os.Lstat(root); err != nil || st.Mode()&os.ModeSymlink == 0 {
		h.warnf("can't create symlink for ssh keys '%s' -> '%s'\n", root, cluster)
	} else if imported {
		os.Remove(root + ".org")
	}
}

var keyLine = regexp.MustCompile(`(^|\s)((ssh|ecdsa|sk)-\S+)\s+(\S+)(\s+\S+)?\s*$`)

// mergeAuthorizedKeys adds root's old keys and this node's own public key to the cluster
// file, dropping duplicate keys (upstream only drops duplicate RSA/DSA keys).
func (h *host) mergeAuthorizedKeys() error {
	cluster, backup := h.clusterAuthorizedKeys(), h.rootAuthorizedKeys()+".org"
	var parts []string
	if data, err := os.ReadFile(cluster); err == nil {
		parts = append(parts, string(data))
	}
	foundBackup := false
	if data, err := os.ReadFile(backup); err == nil {
		parts = append(parts, string(data))
		foundBackup = true
	}
	if data, err := os.ReadFile(filepath.Join(h.sshDir, "id_rsa.pub")); err == nil {
		parts = append(parts, string(data))
	}
	var out strings.Builder
	seen := map[string]bool{}
	for _, part := range parts {
		for _, line := range strings.Split(part, "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			if m := keyLine.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, "#") {
				if seen[m[4]] {
					continue
				}
				seen[m[4]] = true
			}
			out.WriteString(line + "\n")
		}
	}
	if err := writePVE(cluster, []byte(out.String())); err != nil {
		return err
	}
	if st, err := os.Lstat(h.rootAuthorizedKeys()); foundBackup && err == nil && st.Mode()&os.ModeSymlink != 0 {
		os.Remove(backup)
	}
	return nil
}
