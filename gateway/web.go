package gateway

import (
	"embed"
	"net/http"
)

//go:embed web
var webFS embed.FS

// contentSecurity allows the pages to load only the gateway's own scripts,
// styles and API: no inline script, no third party.
const contentSecurity = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurity)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// static serves one embedded page.
func (g *Gateway) static(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		http.ServeFileFS(w, r, webFS, "web/"+name)
	}
}

// asset serves /web/{file} from the embedded assets.
func (g *Gateway) asset(w http.ResponseWriter, r *http.Request) {
	f := r.PathValue("file")
	if _, err := webFS.Open("web/" + f); err != nil || f == "" || f[0] == '.' {
		g.notFound(w, r)
		return
	}
	securityHeaders(w)
	http.ServeFileFS(w, r, webFS, "web/"+f)
}
