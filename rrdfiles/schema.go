package rrdfiles

// Every file is created with one row per minute; the RRAs keep 1 day of
// minutes, 30 days of half hours, about a year of 6 hours and about ten years
// of weeks, averaged and maximum.
const step = 60

var archives = []string{
	"RRA:AVERAGE:0.5:1:1440",
	"RRA:AVERAGE:0.5:30:1440",
	"RRA:AVERAGE:0.5:360:1440",
	"RRA:AVERAGE:0.5:10080:570",
	"RRA:MAX:0.5:1:1440",
	"RRA:MAX:0.5:30:1440",
	"RRA:MAX:0.5:360:1440",
	"RRA:MAX:0.5:10080:570",
}

// Data sources of the 9.0 formats, in column order. Names and types must
// match upstream: the GUI and pvestatd read these files by DS name.
var (
	nodeSources = []string{
		"loadavg:GAUGE", "maxcpu:GAUGE", "cpu:GAUGE", "iowait:GAUGE",
		"memtotal:GAUGE", "memused:GAUGE", "swaptotal:GAUGE", "swapused:GAUGE",
		"roottotal:GAUGE", "rootused:GAUGE", "netin:DERIVE", "netout:DERIVE",
		"memavailable:GAUGE", "arcsize:GAUGE",
		"pressurecpusome:GAUGE", "pressureiosome:GAUGE", "pressureiofull:GAUGE",
		"pressurememorysome:GAUGE", "pressurememoryfull:GAUGE",
	}
	vmSources = []string{
		"maxcpu:GAUGE", "cpu:GAUGE", "maxmem:GAUGE", "mem:GAUGE",
		"maxdisk:GAUGE", "disk:GAUGE", "netin:DERIVE", "netout:DERIVE",
		"diskread:DERIVE", "diskwrite:DERIVE", "memhost:GAUGE",
		"pressurecpusome:GAUGE", "pressurecpufull:GAUGE", "pressureiosome:GAUGE",
		"pressureiofull:GAUGE", "pressurememorysome:GAUGE", "pressurememoryfull:GAUGE",
	}
	storageSources = []string{"total:GAUGE", "used:GAUGE"}
)

// Column counts of the old pve2 formats, which lack the newer trailing columns.
const (
	nodeColumnsPVE2 = 12
	vmColumnsPVE2   = 10
)

// definitions turns "name:TYPE" sources into rrd_create arguments: heartbeat
// 120 s, min 0, no max, followed by the archives.
func definitions(sources []string) []string {
	defs := make([]string, 0, len(sources)+len(archives))
	for _, s := range sources {
		defs = append(defs, "DS:"+s+":120:0:U")
	}
	return append(defs, archives...)
}
