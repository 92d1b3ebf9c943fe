package pnpworker_test

import (
	"strings"
	"testing"
	"time"

	imageinfo "github.com/pnpworker/pnpworker/algo/image_info"
	imagethumbnail "github.com/pnpworker/pnpworker/algo/image_thumbnail"
	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// schemaCase is one document checked against a built-in's hand-written
// schema file and against the schema runner.SchemaFor derives from its Go
// type. hand and derived say whether each accepts it; where they differ,
// why says why that is right.
type schemaCase struct {
	name, doc     string
	hand, derived bool
	why           string
}

func agree(name, doc string, valid bool) schemaCase {
	return schemaCase{name: name, doc: doc, hand: valid, derived: valid}
}

// The built-ins serve their hand-written schema files (other languages
// and the docs read them, and they carry descriptions); their Go types are
// tagged so that the derived schemas accept and refuse the same documents.
// This holds the two together: a bound changed in one place and not the
// other fails here.
func TestDerivedSchemasOfBuiltins(t *testing.T) {
	longText := `"` + strings.Repeat("a", 100001) + `"`
	const img = `"https://example.com/a.png"`
	urlCases := []schemaCase{
		agree("missing url", `{}`, false),
		agree("empty url", `{"image_url":""}`, false),
		agree("not a uri", `{"image_url":"no scheme here"}`, false),
		agree("url is a number", `{"image_url":7}`, false),
		agree("unknown member", `{"image_url":`+img+`,"colour":1}`, false),
		agree("data url", `{"image_url":"data:image/png;base64,iVBORw0KGgo="}`, true),
		agree("object reference", `{"image_url":"obj://inputs/a.png"}`, true),
	}
	memeOut := `"label":"drake","score":0.9,"candidate":"drake","template":"drake.png","distance":0.05,"hash_distance":4,"crop":{"top":0,"bottom":0.1},"alternatives":[{"label":"x","score":0.2,"template":"x.png"}],"image":{"width":10,"height":10,"format":"png","bytes":100}`
	infoOut := `"width":3,"height":2,"format":"png","bytes":99,"phash":"p:0123456789abcdef"`
	color := `{"hex":"#a0b1c2","rgb":[1,2,255],"fraction":0.5}`
	thumbOut := `"width":3,"height":2,"format":"png","png_base64":"iVBORw0KGgo="`
	for _, b := range []struct {
		name     string
		in, out  func() ([]byte, error) // runner.SchemaFor of Input and Output
		inCases  []schemaCase
		outCases []schemaCase
	}{{
		name: languagedetection.Name,
		in:   runner.SchemaFor[languagedetection.Input], out: runner.SchemaFor[languagedetection.Output],
		inCases: []schemaCase{
			agree("text", `{"text":"Guten Morgen"}`, true),
			agree("min confidence", `{"text":"Guten Morgen","min_confidence":0.5}`, true),
			agree("min confidence above 1", `{"text":"Guten Morgen","min_confidence":1.5}`, false),
			agree("negative min confidence", `{"text":"Guten Morgen","min_confidence":-0.1}`, false),
			agree("empty text", `{"text":""}`, false),
			agree("text too long", `{"text":`+longText+`}`, false),
			agree("missing text", `{"min_confidence":0.5}`, false),
			agree("text is a number", `{"text":42}`, false),
			agree("unknown member", `{"text":"Guten Morgen","lang":"de"}`, false),
			agree("not an object", `["Guten Morgen"]`, false),
		},
		outCases: []schemaCase{
			agree("full", `{"language":"deu","iso639_1":"de","name":"German","script":"Latin","confidence":1,"reliable":true}`, true),
			agree("no iso639_1", `{"language":"deu","name":"German","script":"Latin","confidence":0.2,"reliable":false}`, true),
			agree("confidence above 1", `{"language":"deu","name":"German","script":"Latin","confidence":2,"reliable":true}`, false),
			agree("missing reliable", `{"language":"deu","name":"German","script":"Latin","confidence":1}`, false),
			agree("unknown member", `{"language":"deu","name":"German","script":"Latin","confidence":1,"reliable":true,"x":1}`, false),
		},
	}, {
		name: memeclassifier.Name,
		in:   runner.SchemaFor[memeclassifier.Input], out: runner.SchemaFor[memeclassifier.Output],
		inCases: append([]schemaCase{
			agree("url", `{"image_url":`+img+`}`, true),
		}, urlCases...),
		outCases: []schemaCase{
			agree("full", `{`+memeOut+`}`, true),
			agree("unknown label", `{"label":"unknown",`+memeOut[len(`"label":"drake",`):]+`}`, true),
			agree("empty label", `{"label":"",`+memeOut[len(`"label":"drake",`):]+`}`, false),
			agree("score above 1", `{`+memeOut+`,"score":1.5}`, false),
			agree("hash distance above 64", `{`+memeOut+`,"hash_distance":65}`, false),
			agree("crop above 1", `{`+memeOut+`,"crop":{"top":2,"bottom":0}}`, false),
			agree("odd image format", `{`+memeOut+`,"image":{"width":1,"height":1,"format":"svg","bytes":1}}`, false),
			agree("unknown member", `{`+memeOut+`,"x":1}`, false),
			{name: "label and score only", doc: `{"label":"drake","score":0.9}`, hand: true, derived: false,
				why: "Output always writes every member (none is omitempty); the file leaves room for fewer"},
			{name: "no alternatives", doc: `{` + memeOut + `,"alternatives":null}`, hand: false, derived: true,
				why: "a nil Alternatives slice is written as null; the algorithm always makes one, which the file promises"},
			{name: "image without format", doc: `{` + memeOut + `,"image":{"width":1,"height":1,"bytes":1}}`, hand: true, derived: false,
				why: "ImageInfo always writes format; the file leaves it optional"},
		},
	}, {
		name: imageinfo.Name,
		in:   runner.SchemaFor[imageinfo.Input], out: runner.SchemaFor[imageinfo.Output],
		inCases: append([]schemaCase{
			agree("url", `{"image_url":`+img+`}`, true),
			agree("max colors", `{"image_url":`+img+`,"max_colors":16}`, true),
			agree("max colors 0", `{"image_url":`+img+`,"max_colors":0}`, false),
			agree("max colors 17", `{"image_url":`+img+`,"max_colors":17}`, false),
			agree("max colors fraction", `{"image_url":`+img+`,"max_colors":2.5}`, false),
		}, urlCases...),
		outCases: []schemaCase{
			agree("full", `{`+infoOut+`,"colors":[`+color+`]}`, true),
			agree("no colors", `{`+infoOut+`,"colors":[]}`, false),
			agree("rgb of two", `{`+infoOut+`,"colors":[{"hex":"#a0b1c2","rgb":[1,2],"fraction":0.5}]}`, false),
			agree("rgb above 255", `{`+infoOut+`,"colors":[{"hex":"#a0b1c2","rgb":[1,2,256],"fraction":0.5}]}`, false),
			agree("bad hex", `{`+infoOut+`,"colors":[{"hex":"#A0B1C2","rgb":[1,2,3],"fraction":0.5}]}`, false),
			agree("bad phash", `{"width":3,"height":2,"format":"png","bytes":99,"phash":"0123456789abcdef","colors":[`+color+`]}`, false),
			agree("zero width", `{`+infoOut+`,"width":0,"colors":[`+color+`]}`, false),
			agree("odd format", `{`+infoOut+`,"format":"svg","colors":[`+color+`]}`, false),
			agree("missing colors", `{`+infoOut+`}`, false),
			{name: "null colors", doc: `{` + infoOut + `,"colors":null}`, hand: false, derived: true,
				why: "a nil Colors slice is written as null; the algorithm always finds one colour at least, which the file promises"},
		},
	}, {
		name: imagethumbnail.Name,
		in:   runner.SchemaFor[imagethumbnail.Input], out: runner.SchemaFor[imagethumbnail.Output],
		inCases: append([]schemaCase{
			agree("url", `{"image_url":`+img+`}`, true),
			agree("max side", `{"image_url":`+img+`,"max_side":4096}`, true),
			agree("max side too big", `{"image_url":`+img+`,"max_side":4097}`, false),
			agree("max side 0", `{"image_url":`+img+`,"max_side":0}`, false),
		}, urlCases...),
		outCases: []schemaCase{
			agree("full", `{`+thumbOut+`}`, true),
			agree("jpeg", `{`+thumbOut+`,"format":"jpeg"}`, false),
			agree("missing png", `{"width":3,"height":2,"format":"png"}`, false),
			agree("zero height", `{`+thumbOut+`,"height":0}`, false),
		},
	}} {
		t.Run(b.name, func(t *testing.T) {
			codec, err := discovery.NewCodec()
			if err != nil {
				t.Fatal(err)
			}
			var derived [2][]byte
			for i, side := range []struct {
				what   string
				derive func() ([]byte, error)
				cases  []schemaCase
			}{{"input", b.in, b.inCases}, {"output", b.out, b.outCases}} {
				file := b.name + "." + side.what + ".json"
				hand, err := schemas.Compile(file)
				if err != nil {
					t.Fatal(err)
				}
				if derived[i], err = side.derive(); err != nil {
					t.Fatalf("derive %s schema: %v", side.what, err)
				}
				got, err := schemas.CompileBytes("derived."+file, derived[i])
				if err != nil {
					t.Fatalf("derived %s schema does not compile: %v\n%s", side.what, err, derived[i])
				}
				for _, c := range side.cases {
					if c.hand != c.derived && c.why == "" {
						t.Errorf("%s %s: the schemas differ with no reason given", side.what, c.name)
					}
					v, err := schemas.DecodeJSON([]byte(c.doc))
					if err != nil {
						t.Fatalf("%s %s: %v", side.what, c.name, err)
					}
					if ok := hand.Validate(v) == nil; ok != c.hand {
						t.Errorf("%s %s: %s accepts it: %v, want %v", side.what, c.name, file, ok, c.hand)
					}
					if ok := got.Validate(v) == nil; ok != c.derived {
						t.Errorf("%s %s: derived schema accepts it: %v, want %v\n%s", side.what, c.name, ok, c.derived, derived[i])
					}
				}
			}
			// A runner could register the derived schemas: they pass the
			// registry's own bounds (size, patterns, compile cost, expansion).
			rec := discovery.Registration{
				Algorithm: b.name, Version: "1.0.0", Instance: "test", Subject: discovery.RequestSubject(b.name),
				QueueGroup: "runners", InputSchema: derived[0], OutputSchema: derived[1], TimeoutMS: 1000,
				MaxConcurrency: 1, StartedAt: time.Now(), HeartbeatAt: time.Now(),
			}
			if _, err := codec.Encode(rec); err != nil {
				t.Errorf("registration with derived schemas: %v", err)
			}
		})
	}
}
