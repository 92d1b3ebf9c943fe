package synth

import (
	"fmt"
	"image"
	"image/color"
	"sort"
)

// layout is one named template: its pixel size and how to draw it.
type layout struct {
	w, h int
	draw func(c *canvas)
}

var (
	white  = hex("#ffffff")
	black  = hex("#000000")
	skin1  = hex("#f1c27d")
	skin2  = hex("#e0ac69")
	skin3  = hex("#c68642")
	skin4  = hex("#8d5524")
	hairBk = hex("#1c1410")
	hairBr = hex("#5a3825")
	hairBl = hex("#e8d27c")
)

// layouts are the demo templates, named after the classic meme formats
// whose panel structure they imitate.
func layouts() map[string]layout {
	return map[string]layout{
		"drake_pref": {400, 400, func(c *canvas) {
			orange := hex("#f6a623")
			c.rect(0, 0, 0.5, 1, orange)
			c.rect(0.5, 0, 1, 1, white)
			c.figure(0.26, 0.5, 0.42, hex("#f47d20"), skin4, hairBk)
			c.rect(0.3, 0.12, 0.44, 0.2, skin4) // hand up: no
			c.figure(0.24, 1.0, 0.42, hex("#f47d20"), skin4, hairBk)
			c.rect(0.32, 0.68, 0.46, 0.73, skin4) // pointing: yes
			c.rect(0, 0.495, 1, 0.505, black)
			c.rect(0.495, 0, 0.505, 1, black)
		}},
		"expanding_brain": {300, 450, func(c *canvas) {
			glows := []string{"#f08cb4", "#9ad0f5", "#d8f0ff", "#fffbe6"}
			bgs := []string{"#2a2a2a", "#10233f", "#08305a", "#1a0f3c"}
			for i := 0; i < 4; i++ {
				y0, y1 := float64(i)/4, float64(i+1)/4
				c.rect(0, y0, 0.5, y1, white)
				c.rect(0.5, y0, 1, y1, hex(bgs[i]))
				c.ellipse(0.72, y0+0.14, 0.13, 0.07, hex("#c9a27e")) // head
				r := 0.05 + 0.035*float64(i)
				c.circle(0.73, y0+0.1, r, hex(glows[i]))
				c.rect(0, y1-0.004, 1, y1, black)
			}
			c.rect(0.497, 0, 0.503, 1, black)
		}},
		"two_red_buttons": {320, 420, func(c *canvas) {
			c.rect(0, 0, 1, 0.58, hex("#c8ccd0"))
			c.rect(0.08, 0.18, 0.92, 0.5, hex("#4a4f55"))
			c.circle(0.32, 0.33, 0.1, hex("#e02020"))
			c.circle(0.68, 0.33, 0.1, hex("#e02020"))
			c.ellipse(0.5, 0.12, 0.08, 0.05, skin1) // hand
			c.rect(0, 0.58, 1, 1, hex("#e8dcc0"))
			c.figure(0.5, 1.0, 0.4, hex("#2050b0"), skin1, hairBk)
			c.ellipse(0.38, 0.73, 0.015, 0.02, hex("#7fc8ff")) // sweat
			c.ellipse(0.62, 0.71, 0.015, 0.02, hex("#7fc8ff"))
			c.rect(0, 0.575, 1, 0.585, black)
		}},
		"distracted_boyfriend": {480, 320, func(c *canvas) {
			c.vgrad(0, 0, 1, 0.55, hex("#8fc3e8"), hex("#d9ecf7"))
			c.ellipse(0.15, 0.35, 0.18, 0.25, hex("#3f7f3a"))
			c.ellipse(0.85, 0.3, 0.2, 0.28, hex("#4a8c3f"))
			c.rect(0, 0.55, 1, 1, hex("#9a9a92"))
			c.figure(0.2, 1.0, 0.85, hex("#d43a3a"), skin1, hairBr)
			c.figure(0.52, 1.0, 0.9, hex("#3a6fb0"), skin2, hairBr)
			c.figure(0.8, 1.0, 0.85, hex("#2fa3a0"), skin1, hairBk)
		}},
		"change_my_mind": {480, 320, func(c *canvas) {
			c.vgrad(0, 0, 1, 0.6, hex("#6aa84f"), hex("#93c47d"))
			c.rect(0, 0.6, 1, 1, hex("#b6a58a"))
			c.figure(0.2, 0.95, 0.75, hex("#5b5b8f"), skin1, hairBr)
			c.rect(0.1, 0.62, 0.9, 0.7, hex("#7a5230")) // table top
			c.rect(0.15, 0.7, 0.2, 1, hex("#5e3d22"))
			c.rect(0.8, 0.7, 0.85, 1, hex("#5e3d22"))
			c.rect(0.38, 0.2, 0.86, 0.62, white) // sign
			c.text(0.4, 0.28, 0.84, 0.4, "CHANGE", black, nil)
			c.text(0.4, 0.42, 0.84, 0.55, "MY MIND", black, nil)
			c.rect(0.25, 0.55, 0.3, 0.62, hex("#ffffff")) // mug
		}},
		"woman_yelling_at_cat": {520, 260, func(c *canvas) {
			c.rect(0, 0, 0.5, 1, hex("#3d3a4a"))
			c.figure(0.16, 1.0, 0.95, hex("#e8e0d0"), skin1, hairBl)
			c.figure(0.36, 1.0, 0.9, hex("#2a2a2a"), skin1, hairBr)
			c.rect(0.5, 0, 1, 1, hex("#dfe8d8"))
			c.rect(0.55, 0.62, 0.98, 1, white) // table
			c.ellipse(0.76, 0.5, 0.1, 0.2, hex("#f4f4f4"))
			c.ellipse(0.76, 0.28, 0.07, 0.14, hex("#f4f4f4"))
			c.poly(hex("#f4f4f4"), 0.7, 0.2, 0.72, 0.08, 0.74, 0.18)
			c.poly(hex("#f4f4f4"), 0.78, 0.18, 0.8, 0.08, 0.82, 0.2)
			c.ellipse(0.76, 0.6, 0.06, 0.05, hex("#7bb36e")) // salad
			c.rect(0.497, 0, 0.503, 1, black)
		}},
		"this_is_fine": {480, 270, func(c *canvas) {
			c.vgrad(0, 0, 1, 1, hex("#f28c28"), hex("#c0391b"))
			for i := 0; i < 6; i++ {
				x := 0.05 + 0.16*float64(i)
				c.poly(hex("#ffd23f"), x, 0.5, x+0.06, 0.05+0.05*float64(i%3), x+0.12, 0.5)
			}
			c.rect(0, 0.72, 1, 1, hex("#6b3a1e"))
			c.ellipse(0.55, 0.55, 0.09, 0.2, hex("#f2c744")) // dog
			c.circle(0.55, 0.33, 0.08, hex("#f2c744"))
			c.rect(0.47, 0.2, 0.63, 0.24, hex("#6a4b2a")) // hat
			c.rect(0.62, 0.6, 0.68, 0.72, white)          // cup
		}},
		"gru_plan": {400, 400, func(c *canvas) {
			for i := 0; i < 4; i++ {
				x0, y0 := float64(i%2)/2, float64(i/2)/2
				c.rect(x0, y0, x0+0.5, y0+0.5, hex("#9fb3c8"))
				c.rect(x0+0.04, y0+0.05, x0+0.3, y0+0.4, white)
				c.frame(x0+0.04, y0+0.05, x0+0.3, y0+0.4, 0.008, hex("#6d6d6d"))
				c.figure(x0+0.39, y0+0.5, 0.4, hex("#3a3a3a"), hex("#e8d8c8"), hex("#3a3a3a"))
				c.rect(x0+0.34, y0+0.3, x0+0.44, y0+0.33, hex("#5a7d2a")) // scarf
			}
			c.rect(0, 0.497, 1, 0.503, black)
			c.rect(0.497, 0, 0.503, 1, black)
		}},
		"left_exit_ramp": {400, 360, func(c *canvas) {
			c.vgrad(0, 0, 1, 0.5, hex("#5aa0e0"), hex("#b8d8f0"))
			c.rect(0.08, 0.06, 0.46, 0.36, hex("#1e7a3c"))
			c.rect(0.54, 0.06, 0.92, 0.36, hex("#1e7a3c"))
			c.poly(white, 0.18, 0.3, 0.18, 0.16, 0.13, 0.16, 0.22, 0.08, 0.31, 0.16, 0.26, 0.16, 0.26, 0.3)
			c.poly(white, 0.7, 0.3, 0.7, 0.16, 0.65, 0.16, 0.74, 0.08, 0.83, 0.16, 0.78, 0.16, 0.78, 0.3)
			c.rect(0, 0.5, 1, 1, hex("#5f8f3a"))
			c.poly(hex("#555555"), 0.2, 1, 0.45, 0.5, 0.6, 0.5, 0.9, 1)
			c.poly(hex("#555555"), 0.05, 0.6, 0.45, 0.5, 0.5, 0.56, 0.15, 0.7)
			c.rect(0.61, 0.72, 0.75, 0.84, hex("#c0302a")) // car
		}},
		"uno_draw_25": {440, 300, func(c *canvas) {
			c.rect(0, 0, 0.5, 1, hex("#2b2b2b"))
			c.rect(0.12, 0.1, 0.38, 0.9, hex("#d62a1e"))
			c.ellipse(0.25, 0.5, 0.1, 0.3, white)
			c.text(0.14, 0.4, 0.36, 0.6, "DRAW 25", hex("#d62a1e"), nil)
			c.rect(0.5, 0, 1, 1, hex("#e9e4d8"))
			c.figure(0.75, 1.0, 0.9, hex("#8a8a8a"), skin1, hairBk)
			for i := 0; i < 5; i++ {
				x := 0.6 + 0.05*float64(i)
				c.rect(x, 0.7, x+0.07, 0.92, hex("#f8f8f8"))
				c.frame(x, 0.7, x+0.07, 0.92, 0.004, hex("#303030"))
			}
			c.rect(0.497, 0, 0.503, 1, black)
		}},
		"stonks": {400, 300, func(c *canvas) {
			c.vgrad(0, 0, 1, 1, hex("#0b1f4a"), hex("#1f4fa8"))
			for i := 1; i < 8; i++ {
				c.rect(float64(i)/8, 0, float64(i)/8+0.004, 1, hex("#3a66c4"))
				c.rect(0, float64(i)/8, 1, float64(i)/8+0.005, hex("#3a66c4"))
			}
			c.poly(hex("#3ccf4e"), 0.45, 0.9, 0.75, 0.45, 0.68, 0.4, 0.92, 0.22, 0.9, 0.5, 0.83, 0.45, 0.53, 0.95)
			c.figure(0.25, 1.0, 0.85, hex("#20202a"), hex("#f2dccc"), hex("#2a2a2a"))
		}},
		"surprised_face": {400, 300, func(c *canvas) {
			c.rect(0, 0, 1, 1, hex("#6f8fb0"))
			c.ellipse(0.5, 0.58, 0.3, 0.5, hex("#f7d82b"))
			c.circle(0.4, 0.45, 0.045, black)
			c.circle(0.6, 0.45, 0.045, black)
			c.circle(0.41, 0.43, 0.015, white)
			c.circle(0.61, 0.43, 0.015, white)
			c.ellipse(0.5, 0.7, 0.06, 0.1, hex("#7a1f1f"))
			c.circle(0.3, 0.62, 0.045, hex("#e83a2a"))
			c.circle(0.7, 0.62, 0.045, hex("#e83a2a"))
		}},
		"boardroom_meeting": {360, 480, func(c *canvas) {
			c.rect(0, 0, 1, 0.34, hex("#d7d2c8"))
			c.rect(0.1, 0.2, 0.9, 0.3, hex("#6b4a2e"))
			for i := 0; i < 4; i++ {
				c.figure(0.18+0.21*float64(i), 0.22, 0.16, hex("#34495e"), skin1, hairBr)
			}
			c.rect(0, 0.34, 1, 0.67, hex("#e8e2d6"))
			c.figure(0.5, 0.67, 0.28, hex("#34495e"), skin2, hairBk)
			c.rect(0, 0.67, 1, 1, hex("#cfd8dc"))
			c.rect(0.55, 0.7, 0.95, 0.97, hex("#a5d6f7")) // window
			c.figure(0.75, 0.95, 0.2, hex("#34495e"), skin1, hairBl)
			c.figure(0.3, 0.98, 0.26, hex("#2c3e50"), skin3, hairBk)
			c.rect(0, 0.335, 1, 0.345, black)
			c.rect(0, 0.665, 1, 0.675, black)
		}},
		"one_does_not_simply": {480, 270, func(c *canvas) {
			c.hgrad(0, 0, 1, 1, hex("#2e1f14"), hex("#6b4a2f"))
			c.figure(0.5, 1.0, 0.95, hex("#3d2b1f"), skin2, hairBr)
			c.ellipse(0.5, 0.28, 0.05, 0.12, hex("#4a3020")) // beard
			c.rect(0.6, 0.55, 0.72, 0.62, skin2)             // hand
			out := black
			c.text(0.02, 0.78, 0.98, 0.98, "ONE DOES NOT SIMPLY", white, &out)
		}},
		"mocking_spongebob": {420, 300, func(c *canvas) {
			c.vgrad(0, 0, 1, 1, hex("#7ec8c8"), hex("#2e8b57"))
			c.poly(hex("#f4e04d"), 0.3, 0.9, 0.25, 0.3, 0.45, 0.15, 0.6, 0.35, 0.55, 0.9)
			c.circle(0.4, 0.32, 0.04, white)
			c.circle(0.5, 0.34, 0.04, white)
			c.circle(0.4, 0.32, 0.015, hex("#3a7bd5"))
			c.circle(0.5, 0.34, 0.015, hex("#3a7bd5"))
			c.rect(0.3, 0.72, 0.56, 0.9, hex("#8b5a2b"))
			c.rect(0.6, 0.5, 0.9, 0.54, hex("#f4e04d")) // arm
		}},
		"is_this_a_pigeon": {480, 320, func(c *canvas) {
			c.vgrad(0, 0, 1, 0.8, hex("#e6d3a3"), hex("#b99a6b"))
			c.figure(0.3, 0.8, 0.75, hex("#3a3a8a"), hex("#f0c8a0"), hex("#1a1a1a"))
			c.rect(0.36, 0.35, 0.58, 0.4, hex("#f0c8a0")) // arm
			c.poly(hex("#f5a742"), 0.72, 0.3, 0.62, 0.15, 0.68, 0.38)
			c.poly(hex("#f5a742"), 0.72, 0.3, 0.82, 0.15, 0.76, 0.38)
			c.rect(0.715, 0.25, 0.725, 0.4, black)
			c.rect(0, 0.8, 1, 1, hex("#1b1b1b"))
			c.text(0.03, 0.82, 0.97, 0.98, "IS THIS A PIGEON?", white, nil)
		}},
	}
}

// Names returns the demo template names, sorted.
func Names() []string {
	var out []string
	for n := range layouts() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Template draws the demo template name at its native size.
func (r *Renderer) Template(name string) (*image.RGBA, error) {
	l, ok := layouts()[name]
	if !ok {
		return nil, fmt.Errorf("synth: no template %q", name)
	}
	c := r.newCanvas(l.w, l.h, color.RGBA{255, 255, 255, 255})
	l.draw(c)
	return c.img, nil
}
