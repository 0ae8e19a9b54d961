package main

import (
	"image/color"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"
)

// The window's small widgets and layouts, shared by its views.

// showIn shows a file dialog at a comfortable size, in folder dir when it is set and can
// be listed.
func showIn(d *dialog.FileDialog, dir string) {
	if dir != "" {
		if l, err := storage.ListerForURI(storage.NewFileURI(dir)); err == nil {
			d.SetLocation(l)
		}
	}
	d.Resize(fyne.NewSize(900, 600))
	d.Show()
}

// notice is the coloured message under the server row: why a program could not be sent.
type notice struct {
	bg      *canvas.Rectangle
	strip   *canvas.Rectangle
	label   *widget.Label
	content *fyne.Container
}

func newNotice() *notice {
	n := &notice{bg: canvas.NewRectangle(color.Transparent), strip: canvas.NewRectangle(color.Transparent), label: widget.NewLabel("")}
	n.label.Wrapping = fyne.TextWrapWord
	n.strip.SetMinSize(fyne.NewSize(6, 0))
	closeBtn := widget.NewButtonWithIcon("", theme.CancelIcon(), n.hide)
	closeBtn.Importance = widget.LowImportance
	n.content = container.NewStack(n.bg, container.NewBorder(nil, nil, n.strip, container.NewVBox(closeBtn), n.label))
	n.content.Hide()
	return n
}

func (n *notice) show(c fyne.ThemeColorName, text string) {
	n.bg.FillColor = tint(theme.Color(c), 0x38)
	n.strip.FillColor = theme.Color(c)
	n.label.SetText(text)
	n.content.Show()
	n.content.Refresh()
}

func (n *notice) hide() {
	if n.content.Visible() {
		n.content.Hide()
	}
}

func (n *notice) text() string {
	if !n.content.Visible() {
		return ""
	}
	return n.label.Text
}

// tint returns c with alpha a: a background that keeps the theme's text readable.
func tint(c color.Color, a uint8) color.Color {
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	n.A = a
	return n
}

// withWidth gives o a minimum width (an entry's is tiny otherwise).
func withWidth(o fyne.CanvasObject, w float32) fyne.CanvasObject {
	return container.New(&minWidth{w: w}, o)
}

type minWidth struct{ w float32 }

func (m *minWidth) MinSize(objs []fyne.CanvasObject) fyne.Size {
	s := objs[0].MinSize()
	return fyne.NewSize(max(s.Width, m.w), s.Height)
}

func (m *minWidth) Layout(objs []fyne.CanvasObject, size fyne.Size) {
	for _, o := range objs {
		o.Resize(size)
		o.Move(fyne.NewPos(0, 0))
	}
}

var _ fyne.Layout = (*minWidth)(nil)
