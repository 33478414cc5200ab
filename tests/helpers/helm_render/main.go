// helm_render: renders a Helm chart's templates the way `helm template` does, for the tests of
// deploy/helm where helm itself is not installed (Debian does not package it). Go text/template with
// the sprig functions (what helm uses) plus helm's own include, tpl, toYaml, fromYaml, required and
// fail; .Values from values.yaml with --set overrides, .Chart from Chart.yaml, .Release. Output: the
// non-empty manifests, each after "---" and a "# Source:" line, as helm prints them.
//
//	go build (GO111MODULE=off GOPATH=/usr/share/gocode) && ./helm_render CHART_DIR [--release NAME] [--set a.b=v]...
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

func toYaml(v interface{}) string {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(v); err != nil {
		return ""
	}
	e.Close()
	return strings.TrimSuffix(b.String(), "\n")
}

// a --set value as helm's strvals reads a scalar: bool, integer, else string
func scalar(s string) interface{} {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	return s
}

func set(values map[string]interface{}, kv string) error {
	eq := strings.IndexByte(kv, '=')
	if eq < 1 {
		return fmt.Errorf("--set %q: expected key=value", kv)
	}
	path := strings.Split(kv[:eq], ".")
	m := values
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = scalar(kv[eq+1:])
	return nil
}

func readYaml(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return out, nil
}

func run() error {
	if len(os.Args) < 2 {
		return errors.New("usage: helm_render CHART_DIR [--release NAME] [--set key=value]...")
	}
	chartDir, release := os.Args[1], "release-name"
	var sets []string
	for i := 2; i < len(os.Args); i++ {
		switch a := os.Args[i]; {
		case (a == "--release" || a == "--set") && i+1 < len(os.Args):
			if a == "--release" {
				release = os.Args[i+1]
			} else {
				sets = append(sets, os.Args[i+1])
			}
			i++
		default:
			return fmt.Errorf("unknown argument %q", a)
		}
	}
	chart, err := readYaml(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYaml(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, kv := range sets {
		if err := set(values, kv); err != nil {
			return err
		}
	}
	name, _ := chart["name"].(string)
	data := map[string]interface{}{
		"Values": values,
		"Chart": map[string]interface{}{"Name": name, "Version": fmt.Sprint(chart["version"]),
			"AppVersion": fmt.Sprint(chart["appVersion"]), "ApiVersion": chart["apiVersion"]},
		"Release": map[string]interface{}{"Name": release, "Namespace": "default", "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Capabilities": map[string]interface{}{"KubeVersion": map[string]interface{}{"Version": "v1.30.0"}},
	}

	t := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYaml
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["include"] = func(name string, d interface{}) (string, error) {
		var b bytes.Buffer
		err := t.ExecuteTemplate(&b, name, d)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, d interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		if c, err = c.New("tpl").Parse(text); err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = c.Execute(&b, d)
		return b.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	t.Funcs(funcs)

	dir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		text, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		full := name + "/templates/" + e.Name()
		if _, err := t.New(full).Parse(string(text)); err != nil {
			return err
		}
		if !strings.HasPrefix(e.Name(), "_") && e.Name() != "NOTES.txt" {
			files = append(files, full)
		}
	}
	sort.Strings(files)
	var out bytes.Buffer
	for _, f := range files {
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, f, data); err != nil {
			return fmt.Errorf("execution error at (%s): %v", f, err)
		}
		s := strings.ReplaceAll(b.String(), "<no value>", "")
		if strings.TrimSpace(s) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", f, strings.TrimSpace(s))
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
