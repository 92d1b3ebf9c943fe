package imagefetch

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
)

// decodeOverhead is what every decode allocates whatever the picture:
// readers, decompressor windows, Huffman and colour tables.
const decodeOverhead = 256 << 10

// decodeCost returns an upper bound of the bytes decoding data allocates,
// computed from its header alone: the decoded image (width × height × the
// bytes per pixel of the type the decoder produces for this format, bit
// depth and colour type) plus what the decoder allocates beside it
// (interlace passes, progressive JPEG coefficients, colour conversions,
// decompression buffers). It errs on the side of more; decoding itself
// never allocates more than this. cfg is the header as DecodeConfig read it.
func decodeCost(format string, data []byte, cfg image.Config) int64 {
	w, h := int64(cfg.Width), int64(cfg.Height)
	px := w * h
	var n int64
	switch format {
	case "png":
		n = pngCost(data, w, h)
	case "jpeg":
		n = jpegCost(data, w, h)
	case "gif":
		// image/gif decodes the first frame only, and refuses a frame
		// outside the logical screen: one byte per pixel at most.
		n = px
	case "webp":
		n = webpCost(cfg.ColorModel, w, h, int64(len(data))) + int64(len(data))
	case "bmp":
		n = px*bytesPerPixel(cfg.ColorModel) + 4*w + 4
	case "tiff":
		// The image, plus one block's raw data: golang.org/x/image/tiff
		// lets a block decompress to 8 bytes per pixel of the block
		// whatever its real depth, read into a growing buffer (up to twice
		// that allocated). Tiles may overhang the picture by 16 pixels, and
		// small pictures may use tiles up to 1024×1024.
		block := max(px+16*(w+h)+256, 1<<20)
		n = px*bytesPerPixel(cfg.ColorModel) + 2*8*block
	default:
		n = px * 16
	}
	return n + decodeOverhead
}

// bytesPerPixel is the size of a pixel of the image type decoders produce
// for model; 8, the largest, for a model it does not know.
func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		return 4
	case color.YCbCrModel:
		return 3 // 4:4:4, the largest subsampling
	case color.NYCbCrAModel:
		return 4
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8
}

// pngCost reads the IHDR chunk and the chunks before the first IDAT (a tRNS
// chunk there turns grey and RGB into an image with alpha). image/png
// decodes into Gray, Gray16, RGBA, RGBA64, NRGBA, NRGBA64 or Paletted;
// interlaced images are decoded pass by pass into images of their own (as
// many pixels again) and merged. Each pass allocates two rows of raw data.
func pngCost(data []byte, w, h int64) int64 {
	if len(data) < 33 || string(data[12:16]) != "IHDR" {
		return w * h * 16
	}
	depth, ctype, interlaced := int64(data[24]), data[25], data[28] == 1
	trns := false
	for p := 33; p+8 <= len(data); {
		n := int64(binary.BigEndian.Uint32(data[p:]))
		typ := string(data[p+4 : p+8])
		if typ == "IDAT" || n > int64(len(data)) {
			break
		}
		if typ == "tRNS" {
			trns = true
		}
		p += 12 + int(n)
	}
	wide := depth == 16
	var bpp, channels int64
	switch ctype {
	case 0: // grey
		channels, bpp = 1, pick(wide, 2, 1)
		if trns {
			bpp = pick(wide, 8, 4)
		}
	case 2: // RGB
		channels, bpp = 3, pick(wide, 8, 4)
	case 3: // paletted
		channels, bpp = 1, 1
	case 4: // grey + alpha
		channels, bpp = 2, pick(wide, 8, 4)
	case 6: // RGBA
		channels, bpp = 4, pick(wide, 8, 4)
	default:
		return w * h * 16
	}
	img := w * h * bpp
	rows := 2 * (1 + (channels*depth*w+7)/8)
	if interlaced {
		return 2*img + 7*rows
	}
	return img + rows
}

func pick(c bool, a, b int64) int64 {
	if c {
		return a
	}
	return b
}

// jpegComponent is one component of a JPEG frame header.
type jpegComponent struct{ id, h, v int64 }

// jpegCost reads the frame header (SOF) for the components and their
// sampling factors. image/jpeg allocates the planes padded to whole MCUs
// (a Gray image or a YCbCr of the luma/chroma ratio), a black plane for
// four components, 256 bytes of coefficients per 8×8 block of every
// component for progressive JPEGs, and a 4-byte-per-pixel CMYK or RGBA
// image when it converts four components or RGB (Adobe transform 0, or
// components named R, G, B).
func jpegCost(data []byte, w, h int64) int64 {
	comps, progressive, ok := jpegFrame(data)
	if !ok || len(comps) == 0 {
		return w * h * 16
	}
	for i, c := range comps {
		if len(comps) == 1 {
			comps[i].h, comps[i].v = 1, 1 // as image/jpeg: one component is never subsampled
		} else if c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4 {
			return w * h * 16
		}
	}
	h0, v0 := comps[0].h, comps[0].v
	mxx, myy := (w+8*h0-1)/(8*h0), (h+8*v0-1)/(8*v0)
	luma := 64 * mxx * myy * h0 * v0
	planes := luma
	if len(comps) >= 3 {
		// image.NewYCbCr with the ratio of the first two components.
		planes += 2 * luma / (max(1, h0/comps[1].h) * max(1, v0/comps[1].v))
	}
	if len(comps) == 4 {
		planes += 64 * mxx * myy * comps[3].h * comps[3].v
	}
	n := planes
	if progressive {
		for _, c := range comps {
			n += 256 * mxx * myy * c.h * c.v
		}
	}
	rgb := len(comps) == 3 && comps[0].id == 'R' && comps[1].id == 'G' && comps[2].id == 'B'
	if len(comps) == 4 || (len(comps) == 3 && (rgb || jpegHasAdobe(data))) {
		n += 4 * w * h
	}
	return n
}

// jpegFrame walks the marker segments up to the first scan and returns the
// components of the frame header and whether it is progressive (SOF2).
func jpegFrame(data []byte) (comps []jpegComponent, progressive, ok bool) {
	p := 2
	for p+4 <= len(data) {
		if data[p] != 0xff {
			return nil, false, false
		}
		m := data[p+1]
		if m == 0xff { // fill byte
			p++
			continue
		}
		if m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7) {
			p += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 || p+2+n > len(data) {
			return nil, false, false
		}
		seg := data[p+4 : p+2+n]
		switch m {
		case 0xc0, 0xc1, 0xc2:
			if len(seg) < 6 {
				return nil, false, false
			}
			nc := int(seg[5])
			if len(seg) < 6+3*nc {
				return nil, false, false
			}
			for i := range nc {
				c := seg[6+3*i:]
				comps = append(comps, jpegComponent{id: int64(c[0]), h: int64(c[1] >> 4), v: int64(c[1] & 0x0f)})
			}
			return comps, m == 0xc2, true
		case 0xda, 0xd9:
			return nil, false, false
		}
		p += 2 + n
	}
	return nil, false, false
}

// jpegHasAdobe reports whether an Adobe APP14 segment occurs anywhere in
// data (image/jpeg reads it wherever it is). In entropy-coded data 0xff is
// always followed by 0x00 or a restart marker, so a match is a segment (or
// part of another segment's payload, which only overestimates).
func jpegHasAdobe(data []byte) bool {
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte("\xff\xee"))
		if j < 0 {
			return false
		}
		i += j + 2
		if i+7 <= len(data) && string(data[i+2:i+7]) == "Adobe" {
			return true
		}
	}
}

// webpCost: golang.org/x/image/webp decodes lossy images (VP8) into a
// YCbCr 4:2:0 of whole 16×16 macroblocks and lossless ones (VP8L) into an
// NRGBA, with transforms that may allocate a second image (colour
// indexing) and sub-images of up to a quarter pixel each, plus up to 2600
// groups of Huffman trees of up to ~64 KiB each; a tree costing at least
// three encoded bytes, groups allocate at most ~4 KiB per encoded byte.
// An alpha channel (NYCbCrA) is a plane of its own, itself possibly
// VP8L-compressed. The encoded chunks are read into memory too (the caller
// adds size, the encoded size).
func webpCost(m color.Model, w, h, size int64) int64 {
	lossy := 16 * ((w + 15) / 16) * 16 * ((h + 15) / 16) * 3 / 2
	tiles := ((w + 3) / 4) * ((h + 3) / 4)
	lossless := 10*w*h + min(min(2600, tiles)*(64<<10), size*(4<<10))
	switch m {
	case color.YCbCrModel:
		return lossy
	case color.NYCbCrAModel:
		return lossy + w*h + lossless
	default:
		return lossless
	}
}
