package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"runbox/sandbox"
	"runbox/scheduler"
)

// clusterView is the Cluster tab: the nodes of the server in the fields and their load,
// the jobs running and waiting, refreshed every Config.StatusEvery while the tab shows.
type clusterView struct {
	u *UI

	header  *widget.Label
	problem *widget.Label
	summary *widget.Label
	nodes   []scheduler.NodeInfo
	jobs    []scheduler.Info // running, then queued
	queued  int
	nodeTbl *widget.List
	jobTbl  *widget.List
	content fyne.CanvasObject

	inFlight bool // a status request is on its way
}

func newClusterView(u *UI) *clusterView {
	c := &clusterView{u: u, header: widget.NewLabel("Open this tab to see the cluster of the server above."),
		problem: widget.NewLabel(""), summary: widget.NewLabel("")}
	c.header.TextStyle.Bold = true
	c.problem.Wrapping = fyne.TextWrapWord
	c.problem.Importance = widget.DangerImportance
	c.problem.Hide()
	c.summary.Wrapping = fyne.TextWrapWord

	c.nodeTbl = widget.NewList(
		func() int { return len(c.nodes) },
		func() fyne.CanvasObject {
			name := widget.NewLabel("")
			name.TextStyle.Bold = true
			name.Truncation = fyne.TextTruncateEllipsis
			return container.NewGridWithColumns(5, name, widget.NewLabel(""),
				widget.NewProgressBar(), widget.NewProgressBar(), widget.NewProgressBar())
		},
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if id >= len(c.nodes) {
				return
			}
			n := c.nodes[id]
			cells := o.(*fyne.Container).Objects
			name := n.Name
			if n.State != "" && n.State != scheduler.NodeReady {
				name += " (" + n.State + ")"
			}
			cells[0].(*widget.Label).SetText(name)
			cells[1].(*widget.Label).SetText(n.Role)
			setBar(cells[2].(*widget.ProgressBar), float64(n.Running), float64(max(n.Capacity, 1)),
				fmt.Sprintf("%d / %d programs", n.Running, n.Capacity))
			setBar(cells[3].(*widget.ProgressBar), n.Load.CPU, 100, fmt.Sprintf("%.0f %%", n.Load.CPU))
			mem := "unknown"
			if n.Load.MemTotal > 0 {
				mem = sandbox.FormatSize(int64(n.Load.MemUsed)) + " / " + sandbox.FormatSize(int64(n.Load.MemTotal))
			}
			setBar(cells[4].(*widget.ProgressBar), float64(n.Load.MemUsed), float64(max(n.Load.MemTotal, 1)), mem)
		})
	c.jobTbl = widget.NewList(
		func() int { return len(c.jobs) },
		func() fyne.CanvasObject {
			return container.NewGridWithColumns(4, widget.NewLabel(""), widget.NewLabel(""), widget.NewLabel(""), widget.NewLabel(""))
		},
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if id >= len(c.jobs) {
				return
			}
			in := c.jobs[id]
			cells := o.(*fyne.Container).Objects
			cells[0].(*widget.Label).SetText(in.ID)
			cells[1].(*widget.Label).SetText(languageLabel(in.Language))
			state := string(in.State)
			if id >= len(c.jobs)-c.queued {
				state = fmt.Sprintf("queued #%d", id-(len(c.jobs)-c.queued)+1)
			}
			cells[2].(*widget.Label).SetText(state)
			where := in.Node
			if !in.Started.IsZero() {
				where += " since " + in.Started.Local().Format("15:04:05")
			}
			cells[3].(*widget.Label).SetText(where)
		})

	refresh := widget.NewButtonWithIcon("Refresh", theme.ViewRefreshIcon(), c.refresh)
	bold := func(s string) *widget.Label {
		return widget.NewLabelWithStyle(s, fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	}
	nodeHead := container.NewGridWithColumns(5, bold("Node"), bold("Role"), bold("Programs running / slots"), bold("CPU"), bold("Memory"))
	jobHead := container.NewGridWithColumns(4, bold("Job"), bold("Language"), bold("State"), bold("Node"))
	top := container.NewVBox(container.NewBorder(nil, nil, nil, refresh, c.header), c.problem, c.summary)
	lists := container.NewVSplit(
		container.NewBorder(nodeHead, nil, nil, nil, c.nodeTbl),
		container.NewBorder(container.NewVBox(widget.NewSeparator(), jobHead), nil, nil, nil, c.jobTbl))
	c.content = container.NewBorder(top, nil, nil, nil, lists)
	return c
}

// setBar shows value out of max with text on the bar.
func setBar(b *widget.ProgressBar, value, max float64, text string) {
	b.Max = max
	b.TextFormatter = func() string { return text }
	b.SetValue(min(value, max))
}

// refresh asks the server in the fields for its status, unless a request is on its way.
func (c *clusterView) refresh() {
	if c.inFlight {
		return
	}
	srv, err := c.u.srv.server()
	if err != nil {
		c.showProblem(err.Error())
		return
	}
	c.inFlight = true
	ctx, cancel := context.WithTimeout(c.u.ctx, c.u.cfg.StatusTimeout)
	c.u.wg.Add(1)
	go func() {
		defer c.u.wg.Done()
		defer cancel()
		var snap scheduler.Snapshot
		cl, err := c.u.pool.get(ctx, srv)
		if err == nil {
			snap, err = cl.Status(ctx)
		}
		now := c.u.cfg.Now()
		c.u.do(func() {
			c.inFlight = false
			if err != nil {
				c.header.SetText("Cluster at " + srv.Addr)
				c.showProblem(explain(err, srv.Addr))
				return
			}
			c.apply(srv.Addr, snap, now)
		})
	}()
}

func (c *clusterView) showProblem(msg string) {
	c.problem.SetText(msg)
	c.problem.Show()
}

// apply shows a snapshot.
func (c *clusterView) apply(addr string, snap scheduler.Snapshot, now time.Time) {
	c.problem.Hide()
	c.header.SetText(fmt.Sprintf("Cluster at %s · updated %s", addr, now.Format("15:04:05")))
	c.nodes = slices.Clone(snap.Nodes)
	slices.SortStableFunc(c.nodes, func(a, b scheduler.NodeInfo) int {
		if a.Role != b.Role { // the master first
			return strings.Compare(a.Role, b.Role)
		}
		return strings.Compare(a.Name, b.Name)
	})
	slots, running := 0, 0
	for _, n := range snap.Nodes {
		slots += n.Capacity
		running += n.Running
	}
	c.jobs = append(slices.Clone(snap.Running), snap.Queued...)
	c.queued = len(snap.Queued)
	t := snap.Totals
	c.summary.SetText(fmt.Sprintf("%d node(s) · %d / %d slots busy · %d running · %d queued  —  since start: %d accepted, %d refused busy, %d finished, %d could not run",
		len(snap.Nodes), running, slots, len(snap.Running), len(snap.Queued), t.Accepted, t.Rejected, t.Finished, t.Failed))
	c.nodeTbl.Refresh()
	c.jobTbl.Refresh()
}
