package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/cluster"
	"github.com/pmxcfs-go/pmxcfs/corosyncconf"
	"github.com/pmxcfs-go/pmxcfs/dcdb"
	"github.com/pmxcfs-go/pmxcfs/fs"
	"github.com/pmxcfs-go/pmxcfs/internal/atomicfile"
	"github.com/pmxcfs-go/pmxcfs/internal/logging"
	"github.com/pmxcfs-go/pmxcfs/ipc"
	"github.com/pmxcfs-go/pmxcfs/kvstore"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/pmxcfs-go/pmxcfs/qb"
	"github.com/pmxcfs-go/pmxcfs/ringquorum"
	"github.com/pmxcfs-go/pmxcfs/rrdfiles"
	"github.com/pmxcfs-go/pmxcfs/status"
)

// daemonState is everything the running daemon holds, so that a failed start and a normal
// shutdown release the same things in the same order.
type daemonState struct {
	opts        options
	nodeName    string
	nodeIP      string
	gid         uint32
	lock        *os.File
	status      *status.Status
	db          *memdb.DB
	server      *fs.Mounted
	wrotePID    bool
	clusterMode bool
	// corosyncConf copies /etc/pve/corosync.conf to the host when it is newer.
	corosyncConf *corosyncconf.Syncer
	dcdb         *cluster.Group
	dcdbApp      *dcdb.App
	kvstore      *cluster.Group
	quorum       *ringquorum.Gate // DCDB deliveries against the quorum of their ring
	ipcServer    *ipc.Server
	ipc          *qb.Service
	rrd          *rrdfiles.Writer
	stopCluster  context.CancelFunc
	clusterDone  sync.WaitGroup
}

// startClusterServices follows corosync's quorum and configuration, reconnecting whenever
// corosync is not (yet) running.
func (d *daemonState) startClusterServices() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopCluster = cancel
	quorumLog, confdbLog := logging.For("quorum"), logging.For("confdb")
	members := &cluster.Members{}
	statusApp := kvstore.New(kvstore.Config{Status: d.status, Log: logging.For("status")})
	d.kvstore = &cluster.Group{
		GroupName: kvstore.GroupName, ProtocolVersion: kvstore.ProtocolVersion,
		App: cluster.StatusApp{App: statusApp, Members: members}, Attach: statusApp.Attach,
		Log: logging.For("status"),
	}
	d.ipcServer.Cluster = cluster.StatusSender{App: statusApp, Group: d.kvstore}
	for _, svc := range []struct {
		cluster.Service
		log *logrus.Entry
	}{
		{&cluster.QuorumWatcher{Status: d.status, Log: quorumLog, Gate: d.quorum, Lag: testQuorumLag()}, quorumLog},
		{&cluster.ConfigWatcher{Status: d.status, Log: confdbLog, Members: members}, confdbLog},
		{d.dcdb, logging.For("dcdb")},
		{d.kvstore, logging.For("status")},
	} {
		d.clusterDone.Add(1)
		go func() {
			defer d.clusterDone.Done()
			cluster.Supervise(ctx, svc.log, svc.Service)
		}()
	}
}

func (d *daemonState) start() error {
	o := &d.opts
	var err error
	d.nodeName = o.nodeName
	if d.nodeName == "" {
		if d.nodeName, err = localNodeName(); err != nil {
			return errors.New("Unable to read local node name")
		}
	}
	d.nodeIP = o.nodeIP
	if d.nodeIP == "" {
		ip, ok := lookupNodeIP(d.nodeName)
		if !ok {
			return fmt.Errorf("Unable to resolve node name '%s' to a non-loopback IP address - missing entry in '/etc/hosts' or DNS?", d.nodeName)
		}
		d.nodeIP = ip
		log.Infof("resolved node name '%s' to '%s' for default node IP address", d.nodeName, d.nodeIP)
	}
	if d.gid, err = lookupGroupID("www-data"); err != nil {
		return errors.New("Unable to get www-data group ID")
	}
	syscall.Umask(027)
	os.Mkdir(filepath.Dir(o.db), 0750)
	os.Mkdir(o.runDir, 0750)
	os.Chown(o.runDir, 0, int(d.gid))

	if d.lock, err = acquireLock(o.lockFile()); err != nil {
		return err
	}

	d.rrd = &rrdfiles.Writer{BaseDir: o.rrdDir, Log: logging.For("status")}
	d.status = status.New(status.Options{
		NodeName: d.nodeName, NodeIP: d.nodeIP, PID: uint32(os.Getpid()), Log: logging.For("status"),
		RRDUpdate: d.rrd.Update,
	})
	_, statErr := os.Stat(o.db)
	create := errors.Is(statErr, os.ErrNotExist)
	d.db, err = memdb.Open(o.db, memdb.Options{Observer: d.status, Log: logging.For("database")})
	if err != nil {
		return fmt.Errorf("memdb_open failed - unable to open database '%s': %v", o.db, err)
	}
	d.status.SetVMList(d.db)

	if create && !o.local {
		if err := d.importCorosyncConf(); err != nil {
			return err
		}
	}
	_, hasCorosyncConf := d.db.Lookup("corosync.conf")
	d.clusterMode = hasCorosyncConf == nil && !o.local
	if hasCorosyncConf == nil && o.local {
		log.Info("forcing local mode (although corosync.conf exists)")
	}

	d.ipcServer = &ipc.Server{Status: d.status, DB: d.db, WWWDataGID: d.gid, Log: logging.For("ipcs")}
	var backend fs.Backend = fs.NewLocalBackend(d.db)
	if d.clusterMode {
		d.corosyncConf = &corosyncconf.Syncer{HostPath: o.corosyncConf, Log: logging.For("dcdb"), Settle: time.Second}
		if o.corosyncConf != defaultOptions().corosyncConf {
			// corosync reads only its own file: a reload for another path would just disturb
			// whatever corosync runs on this host (tests use other paths).
			d.corosyncConf.Reload = func() error { return nil }
		}
		d.corosyncConfChanged(true)
		d.quorum = &ringquorum.Gate{}
		app := dcdb.New(dcdb.Config{
			DB: d.db, Quorate: d.status.Quorate, QuorateAtDelivery: d.quorum.Quorate,
			CorosyncConfChanged: d.corosyncConfChanged, QuorumNodes: d.status.QuorumNodes,
			Log: logging.For("dcdb"),
		})
		d.dcdb = &cluster.Group{
			GroupName: dcdb.GroupName, ProtocolVersion: dcdb.ProtocolVersion,
			App: app, Attach: app.Attach, Log: logging.For("dcdb"), Quorum: d.quorum,
		}
		d.dcdbApp = app
		backend = &clusterBackend{db: d.db, app: app, group: d.dcdb, status: d.status}
		d.startClusterServices()
	}

	syscall.Unmount(o.mount, syscall.MNT_FORCE)
	os.Mkdir(o.mount, 0750)
	d.server, err = fs.Mount(o.mount, fs.Config{
		NodeName:   d.nodeName,
		Backend:    backend,
		Generated:  d.generatedFiles(),
		WWWDataGID: d.gid,
		Log:        logging.For("main"),
	})
	if err != nil {
		return fmt.Errorf("fuse_mount error: %v", err)
	}
	reserveFUSEReaders()

	if d.ipc, err = qb.Listen("pve2", d.ipcServer); err != nil {
		// As upstream: /etc/pve stays available even when the IPC socket cannot be had
		// (another pmxcfs in this network namespace holds "pve2").
		logging.For("ipcs").Errorf("unable to start the IPC server 'pve2': %v", err)
	}

	if err := atomicfile.Write(o.pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0644); err != nil {
		return fmt.Errorf("unable to write pid file '%s': %v", o.pidFile, err)
	}
	d.wrotePID = true
	os.Remove(o.restartFlag())
	return nil
}

// testQuorumLag reads PMXCFS_TEST_QUORUM_LAG (a Go duration): the bench tests use it to
// make the quorum goroutine run late, which widens the window in which a node cut off from
// the majority has not yet processed its loss of quorum.
func testQuorumLag() time.Duration {
	v := os.Getenv("PMXCFS_TEST_QUORUM_LAG")
	if v == "" {
		return 0
	}
	lag, err := time.ParseDuration(v)
	if err != nil || lag < 0 {
		logging.For("quorum").Warnf("ignoring PMXCFS_TEST_QUORUM_LAG=%q", v)
		return 0
	}
	logging.For("quorum").Warnf("test mode: quorum notifications are processed %v late", lag)
	return lag
}

// importCorosyncConf seeds a brand-new database with the host's corosync.conf, which is
// how a node that was configured by hand (or by pvecm add) becomes a cluster member.
func (d *daemonState) importCorosyncConf() error {
	data, err := os.ReadFile(d.opts.corosyncConf)
	if err != nil {
		return nil
	}
	now := uint32(time.Now().Unix())
	if err := d.db.Create("corosync.conf", 0, now); err != nil {
		return fmt.Errorf("memdb_create failed - unable to import corosync.conf: %v", err)
	}
	if _, err := d.db.Write("corosync.conf", 0, data, true, 0, now); err != nil {
		return fmt.Errorf("memdb_write failed - unable to import corosync.conf: %v", err)
	}
	return nil
}

func (d *daemonState) serve() int {
	last := d.publishReadiness("") // before the caller returns, so --status can answer at once
	signalReady()
	notifySystemd("READY=1")
	done, reporting, reported := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { d.reportReadiness(last, reporting); close(reported) }()
	server := d.server // stop() clears d.server while this goroutine may still be waiting
	go func() { server.Wait(); close(done) }()
	if sig := waitForSignal(done); sig != nil {
		log.Debugf("received signal %v", sig)
	}
	close(reporting)
	<-reported // it reads the database, which stop() closes
	notifySystemd("STOPPING=1")
	d.writeRestartFlag()
	log.Info("teardown filesystem")
	d.stop()
	log.Info("exit proxmox configuration filesystem (0)")
	return 0
}

// writeRestartFlag tells PVE's IPC clients that the daemon is restarting, so they retry for a
// while instead of failing (IPCC.xs RESTART_GRACE_PERIOD).
func (d *daemonState) writeRestartFlag() {
	path := d.opts.restartFlag()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0440)
	if err != nil {
		log.WithError(err).Warn("unable to create restart flag")
		return
	}
	f.Close()
	os.Chown(path, 0, int(d.gid))
}

// stop releases what start acquired, in reverse order; it is safe after a partial start.
func (d *daemonState) stop() {
	if d.ipc != nil {
		d.ipc.Stop()
		d.ipc = nil
	}
	if d.stopCluster != nil {
		d.stopCluster()
		d.clusterDone.Wait()
		d.stopCluster = nil
	}
	if d.server != nil {
		if err := d.server.Unmount(); err != nil {
			log.WithError(err).Warn("unmount failed, detaching the mount")
			syscall.Unmount(d.opts.mount, syscall.MNT_DETACH)
		}
		d.server = nil
	}
	if d.rrd != nil {
		d.rrd.Flush() // metrics already accepted still reach their files
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			logging.For("database").WithError(err).Error("closing the database failed")
		}
		d.db = nil
	}
	if d.wrotePID {
		os.Remove(d.opts.pidFile)
		d.wrotePID = false
	}
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
}

// corosyncConfChanged copies /etc/pve/corosync.conf to the host when it is newer; notify
// (this node made the change) also asks corosync to reload.
func (d *daemonState) corosyncConfChanged(notify bool) {
	if conf, err := d.db.ReadFile("corosync.conf"); err == nil {
		d.corosyncConf.Sync(conf, notify)
	}
}

// generatedFiles are the root's generated files; their content comes from the same code as
// the IPC replies.
func (d *daemonState) generatedFiles() []fs.GeneratedFile {
	return []fs.GeneratedFile{
		{Name: ".version", Read: d.status.Version},
		{Name: ".members", Read: d.status.Members},
		{Name: ".vmlist", Read: d.status.VMList},
		{Name: ".rrd", Read: func() []byte { return bytes.TrimSuffix(d.status.RRDDump(), []byte{0}) }},
		{Name: ".clusterlog", Read: d.status.ClusterLogJSON},
		fs.DebugFile(logging.Debug, setDebug),
	}
}

// setDebug switches debug logging from /etc/pve/.debug.
func setDebug(on bool) {
	if on == logging.Debug() {
		return
	}
	logging.SetDebug(on)
	if on {
		log.Info("enable debug mode")
	} else {
		log.Info("disable debug mode")
	}
}

// reserveFUSEReaders gives the FUSE server's readers Ps of their own. A goroutine blocked
// in a system call keeps its P, and while no P is idle the runtime's monitor thread takes
// such Ps back after 20 us and keeps waking every 20 us to do so: with as many Ps as CPUs,
// the readers waiting in read(2) on /dev/fuse hold them all between requests. On a
// virtual machine each of those wake-ups is a context switch the hypervisor charges
// dearly; measured in local mode on the 2-CPU bench: 4.3 monitor wake-ups per created
// file, a third of the daemon's context switches, and with the extra Ps 20-30 %
// more files created and read per second at 20 % less CPU (docs/write-path.md, section
// 4). When the readers are not blocked, more goroutines may run at once than there are
// CPUs, which the kernel time-slices; measured, that costs less than the wake-ups saved.
// It runs after the mount because go-fuse sizes its reader pool from GOMAXPROCS;
// GOMAXPROCS set in the environment is left alone.
func reserveFUSEReaders() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	procs := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(procs + fs.BlockedReaders(procs))
}
