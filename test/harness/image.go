package harness

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ImageFile is one entry of an image's single layer.
type ImageFile struct {
	Path string // absolute path in the image
	Mode fs.FileMode
	Data []byte
	Link string // a symlink's target (Data unused)
	Dir  bool
}

// Image is an OCI image built here: one uncompressed layer, no registry and
// no Docker; `ctr images import` takes its archive.
type Image struct {
	Name       string // e.g. "kdd-cni.local/felix:v3.31.0"
	Files      []ImageFile
	Entrypoint []string
	Cmd        []string // the entrypoint's default arguments
	Env        []string
}

// WriteArchive writes the image as an OCI image layout archive (oci-layout,
// index, manifest, config, layer) to path.
func (im Image) WriteArchive(path string) error {
	layer, err := im.layer()
	if err != nil {
		return err
	}
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(layer)
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": im.Entrypoint, "Cmd": im.Cmd, "Env": im.Env},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest, configSize := put(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": im.Name},
		}},
	})
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	add := func(name string, b []byte) {
		_ = aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		_, _ = aw.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, b := range blobs {
		add("blobs/sha256/"+d[len("sha256:"):], b)
	}
	if err := aw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, archive.Bytes(), 0o644)
}

// layer is the tar of the files, parents first, each directory once.
func (im Image) layer() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if dir == "/" || dir == "." || dirs[dir] {
			return nil
		}
		if err := mkdirs(filepath.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		return tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(dir, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch})
	}
	files := append([]ImageFile(nil), im.Files...)
	sort.SliceStable(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.Path] {
			continue
		}
		seen[f.Path] = true
		if err := mkdirs(filepath.Dir(f.Path)); err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(f.Path, "/")
		var err error
		switch {
		case f.Dir:
			err = mkdirs(f.Path)
		case f.Link != "":
			err = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: f.Link, Mode: 0o777, ModTime: epoch})
		default:
			if err = tw.WriteHeader(&tar.Header{Name: name, Mode: int64(f.Mode.Perm()), Size: int64(len(f.Data)), ModTime: epoch}); err == nil {
				_, err = tw.Write(f.Data)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TreeFiles are the files under root, placed at the same paths in the image.
func TreeFiles(root string) ([]ImageFile, error) {
	var out []ImageFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := "/" + strings.TrimPrefix(p, root+"/")
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out = append(out, ImageFile{Path: rel, Dir: true})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, ImageFile{Path: rel, Link: target})
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, ImageFile{Path: rel, Mode: info.Mode(), Data: b})
		}
		return nil
	})
	return out, err
}

// HostFiles copies host files into an image at the same paths: symlinks
// stay symlinks (their targets come too), directories come whole, and every
// dynamically linked executable brings the libraries ldd names.
func HostFiles(paths ...string) ([]ImageFile, error) {
	var out []ImageFile
	done := map[string]bool{}
	var add func(p string) error
	add = func(p string) error {
		if done[p] {
			return nil
		}
		done[p] = true
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, ImageFile{Path: p, Link: target})
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			return add(target)
		case info.IsDir():
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if err := add(filepath.Join(p, e.Name())); err != nil {
					return err
				}
			}
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, ImageFile{Path: p, Mode: info.Mode(), Data: b})
		if info.Mode()&0o111 == 0 && !strings.Contains(filepath.Base(p), ".so") {
			return nil
		}
		for _, lib := range sharedLibraries(p) {
			if err := add(lib); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range paths {
		if err := add(p); err != nil {
			return nil, fmt.Errorf("image file %s: %w", p, err)
		}
	}
	return out, nil
}

// sharedLibraries lists the absolute paths ldd prints for an ELF file
// (none for a static binary or a script).
func sharedLibraries(p string) []string {
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return nil
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs
}
