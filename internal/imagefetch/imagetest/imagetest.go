// Package imagetest builds images for tests: pictures that are large once
// decoded and small encoded, the shape of the decompression bombs the
// fetcher budgets for. Rows are streamed into the encoder, so building a
// 4096×4096 16-bit PNG does not hold its 128 MiB of pixels.
package imagetest

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
)

// PNG colour types (the PNG specification's numbering).
const (
	Gray      = 0
	RGB       = 2
	Paletted  = 3
	GrayAlpha = 4
	RGBA      = 6
)

// PNGSpec describes a PNG to build.
type PNGSpec struct {
	// W and H are the size in pixels.
	W, H int
	// ColorType is one of Gray, RGB, Paletted, GrayAlpha, RGBA.
	ColorType uint8
	// Depth is the bit depth: 8 or 16 (8 for Paletted).
	Depth uint8
	// Interlaced writes the pixels in Adam7 order.
	Interlaced bool
	// Transparent adds a tRNS chunk (for Gray, RGB and Paletted), which
	// makes decoders produce an image with an alpha channel.
	Transparent bool
	// Seed varies the picture, so that images of one spec differ.
	Seed int
}

// PNG encodes the picture s describes: large soft-edged blocks of colour,
// different for each Seed.
func PNG(s PNGSpec) []byte {
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(s.W))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(s.H))
	ihdr[8], ihdr[9] = s.Depth, s.ColorType
	if s.Interlaced {
		ihdr[12] = 1
	}
	chunk(&out, "IHDR", ihdr)
	if s.ColorType == Paletted {
		plte := make([]byte, 3*256)
		for i := range 256 {
			plte[3*i], plte[3*i+1], plte[3*i+2] = byte(i), byte(255-i), byte(i*7)
		}
		chunk(&out, "PLTE", plte)
	}
	if s.Transparent {
		switch s.ColorType {
		case Gray:
			chunk(&out, "tRNS", []byte{0, 1})
		case RGB:
			chunk(&out, "tRNS", []byte{0, 1, 0, 2, 0, 3})
		case Paletted:
			chunk(&out, "tRNS", []byte{0, 128})
		}
	}
	channels := map[uint8]int{Gray: 1, RGB: 3, Paletted: 1, GrayAlpha: 2, RGBA: 4}[s.ColorType]
	bpp := channels * int(s.Depth) / 8
	var idat bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&idat, zlib.DefaultCompression)
	passes := [][4]int{{0, 0, 1, 1}} // x0, y0, dx, dy
	if s.Interlaced {
		passes = [][4]int{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}}
	}
	for _, p := range passes {
		pw := (s.W - p[0] + p[2] - 1) / p[2]
		ph := (s.H - p[1] + p[3] - 1) / p[3]
		if pw <= 0 || ph <= 0 {
			continue
		}
		// Filter "Up" (2) for every row: rows equal to the one above
		// become zeros, which deflate squeezes about a thousandfold.
		row, prev, out := make([]byte, pw*bpp), make([]byte, pw*bpp), make([]byte, 1+pw*bpp)
		out[0] = 2
		zeros := make([]byte, 1+pw*bpp)
		zeros[0] = 2
		for j := range ph {
			y := p[1] + j*p[3]
			if j > 0 && y/512 == (y-p[3])/512 {
				_, _ = zw.Write(zeros) // the same as the row above
				continue
			}
			for i := range pw {
				x := p[0] + i*p[2]
				v := s.value(x, y)
				px := row[i*bpp : (i+1)*bpp]
				for c := range px {
					px[c] = byte(v >> (8 * (c % 3)))
				}
			}
			for k := range row {
				out[1+k] = row[k] - prev[k]
			}
			row, prev = prev, row
			_, _ = zw.Write(out)
		}
	}
	_ = zw.Close()
	chunk(&out, "IDAT", idat.Bytes())
	chunk(&out, "IEND", nil)
	return out.Bytes()
}

// value is the picture: blocks of 512×512 pixels in colours chosen by
// Seed, so that the image compresses well but is not flat.
func (s PNGSpec) value(x, y int) uint32 {
	b := uint32((x/512)*31 + (y/512)*17 + s.Seed*101)
	return b * 2654435761
}

func chunk(w *bytes.Buffer, typ string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	w.Write(n[:])
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	w.WriteString(typ)
	w.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	w.Write(n[:])
}
