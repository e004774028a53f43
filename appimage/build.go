package appimage

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/xlcfg"
)

// ImageManifest is the name, in an image folder, of the app's manifest as
// loaded (defaults filled in): what gozen-image qemu reads.
const ImageManifest = "image.json"

// Image is the set of files of an app's image.
type Image struct {
	// Dir is the image folder.
	Dir string
	// App is the app's name (its folder's name).
	App string
	// Manifest is the app's manifest, defaults filled in.
	Manifest *Manifest
}

// ELF, XLTemplate and LibvirtTemplate are the paths of the image's files.
func (im *Image) ELF() string             { return filepath.Join(im.Dir, im.App+".elf") }
func (im *Image) XLTemplate() string      { return filepath.Join(im.Dir, im.App+".xl.in") }
func (im *Image) LibvirtTemplate() string { return filepath.Join(im.Dir, im.App+".xml.in") }

// Build makes the image of the app in appDir (its gozen.json) with the
// ELF at elfPath into outDir: APP.elf, APP.xl.in, APP.xml.in and
// image.json. The ELF must carry the PVH entry note and the app must
// declare at least the image's MemoryFloor; the xl template is
// checked with xlcfg (with its placeholders filled in) and the XML with
// CheckLibvirtXML.
func Build(appDir, elfPath, outDir string) (*Image, error) {
	app := filepath.Base(filepath.Clean(appDir))
	m, err := LoadManifest(filepath.Join(appDir, ManifestFile))
	if err != nil {
		return nil, err
	}
	if err := CheckPVH(elfPath); err != nil {
		return nil, err
	}
	floor, err := MemoryFloor(elfPath)
	if err != nil {
		return nil, err
	}
	if m.Memory < floor {
		return nil, &FieldError{filepath.Join(appDir, ManifestFile), "memory", fmt.Errorf(
			"%d MiB is below %s's floor of %d MiB (a %d MiB heap arena past its loaded end, aligned, and the stack area; was it trimmed? see gozen-image trim)",
			m.Memory, elfPath, floor, boot.HeapArena>>20)}
	}
	xl := m.XL(app)
	if err := m.CheckXL(app, xl); err != nil {
		return nil, err
	}
	doc, err := m.LibvirtXML()
	if err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("appimage: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("appimage: %w", err)
	}
	im := &Image{Dir: outDir, App: app, Manifest: m}
	if err := copyFile(elfPath, im.ELF()); err != nil {
		return nil, err
	}
	for path, data := range map[string]string{
		im.XLTemplate():                      xl,
		im.LibvirtTemplate():                 doc,
		filepath.Join(outDir, ImageManifest): string(js) + "\n",
	} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return nil, fmt.Errorf("appimage: %w", err)
		}
	}
	return im, nil
}

// OpenImage reads an image folder made by Build.
func OpenImage(dir string) (*Image, error) {
	path := filepath.Join(dir, ImageManifest)
	m, err := LoadManifest(path)
	if err != nil {
		return nil, fmt.Errorf("%w (is %s an image folder made by gozen-image build?)", err, dir)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.xl.in"))
	if len(matches) != 1 {
		return nil, fmt.Errorf("appimage: %s: want one *.xl.in, found %d", dir, len(matches))
	}
	app := filepath.Base(matches[0])
	app = app[:len(app)-len(".xl.in")]
	im := &Image{Dir: dir, App: app, Manifest: m}
	if _, err := os.Stat(im.ELF()); err != nil {
		return nil, fmt.Errorf("appimage: %w", err)
	}
	return im, nil
}

// CheckXL checks an xl template of the app: with sample values for its
// placeholders it parses (xlcfg), its placeholders are the manifest's, and
// it has the manifest's settings.
func (m *Manifest) CheckXL(app, tmpl string) error {
	values := map[string]string{}
	for _, p := range m.Placeholders(app) {
		values[p.Name] = "/sample/" + p.Name
	}
	text, err := Subst(tmpl, values)
	if err != nil {
		return fmt.Errorf("appimage: xl template of %s: %w", app, err)
	}
	cfg, err := xlcfg.Parse([]byte(text))
	if err != nil {
		return fmt.Errorf("appimage: xl template of %s: %w", app, err)
	}
	want := map[string]xlcfg.Value{
		"name":   {Kind: xlcfg.String, Str: m.Name},
		"type":   {Kind: xlcfg.String, Str: "pvh"},
		"kernel": {Kind: xlcfg.String, Str: values[Kernel]},
		"memory": {Kind: xlcfg.Number, Str: fmt.Sprint(m.Memory)},
		"vcpus":  {Kind: xlcfg.Number, Str: fmt.Sprint(m.VCPUs)},
	}
	for k, w := range want {
		if v, ok := cfg.Get(k); !ok || !v.Equal(w) {
			return fmt.Errorf("appimage: xl template of %s: %s is %v, want %v", app, k, v, w)
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("appimage: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("appimage: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("appimage: copying %s: %w", from, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("appimage: %w", err)
	}
	return nil
}
