package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// median of xs (the mean of the two middle values for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile of xs (p in (0,100]); NaN for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

// figure is one row of the result table.
type figure struct {
	key    string // stable identifier, used to collect samples
	label  string // what the row says, unit included
	higher bool   // whether a higher value is better
}

// row is one figure with the median of each side; NaN where a side has no value.
type row struct {
	fig            figure
	upstream, ours float64
}

// formatValue prints a figure with about three significant digits.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// ratio is ours ÷ upstream as printed; "-" when either side is missing or upstream is 0.
func ratio(r row) string {
	if math.IsNaN(r.ours) || math.IsNaN(r.upstream) || r.upstream == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.ours/r.upstream)
}

// formatTable renders rows as an aligned Markdown table.
func formatTable(rows []row) string {
	cells := [][]string{{"figure", "upstream", "ours", "ours/upstream", "better"}}
	for _, r := range rows {
		better := "lower"
		if r.fig.higher {
			better = "higher"
		}
		cells = append(cells, []string{r.fig.label, formatValue(r.upstream), formatValue(r.ours), ratio(r), better})
	}
	width := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len([]rune(s)))
		}
	}
	var b strings.Builder
	line := func(c []string) {
		b.WriteString("|")
		for i, s := range c {
			pad := strings.Repeat(" ", width[i]-len([]rune(s)))
			if i == 0 {
				b.WriteString(" " + s + pad + " |")
			} else {
				b.WriteString(" " + pad + s + " |")
			}
		}
		b.WriteString("\n")
	}
	line(cells[0])
	sep := make([]string, len(width))
	for i, w := range width {
		if i == 0 {
			sep[i] = strings.Repeat("-", w)
		} else {
			sep[i] = strings.Repeat("-", w-1) + ":"
		}
	}
	b.WriteString("|")
	for _, s := range sep {
		b.WriteString(" " + s + " |")
	}
	b.WriteString("\n")
	for _, c := range cells[1:] {
		line(c)
	}
	return b.String()
}
