package agentproto

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
)

// Job is what the agent runs: Argv, with the host directories in Mounts
// mounted first and, if Root is set, inside that root filesystem, starting
// in Dir. On the kernel command line it is CmdParam=EncodeJob(job); over
// the agent channel it is the fields of the "cmd" message.
type Job struct {
	Argv   []string `json:"argv"`
	Mounts []Mount  `json:"mounts,omitempty"`
	Root   *Root    `json:"root,omitempty"`
	Dir    string   `json:"dir,omitempty"` // absolute; default "/"
}

// Mount is a virtio-9p share: the agent mounts the device whose mount tag
// is Tag at Path (absolute, in the command's root), read-only with RO.
type Mount struct {
	Tag  string `json:"tag"`
	Path string `json:"path"`
	RO   bool   `json:"ro,omitempty"`
}

// Root is a virtio-9p share that becomes the command's root filesystem:
// read-only under a tmpfs overlay, or written through with RW. /proc,
// /sys, /dev and /tmp are the guest's own.
type Root struct {
	Tag string `json:"tag"`
	RW  bool   `json:"rw,omitempty"`
}

// Plain reports whether j is only a command, which encodes as before.
func (j Job) Plain() bool { return len(j.Mounts) == 0 && j.Root == nil && j.Dir == "" }

// EncodeJob encodes j for CmdParam: the JSON array of EncodeCmd for a
// plain command (what older agents read), otherwise the JSON object, in
// the same base64url alphabet (one command-line token, no quoting).
func EncodeJob(j Job) string {
	if j.Plain() {
		return EncodeCmd(j.Argv)
	}
	if j.Argv == nil {
		j.Argv = []string{}
	}
	b, err := json.Marshal(j)
	if err != nil { // cannot happen: strings and bools only
		panic(fmt.Sprintf("agentproto: marshal job: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeJob reverses EncodeJob (and reads EncodeCmd's arrays) and checks
// the job (Check).
func DecodeJob(s string) (Job, error) {
	argv, err := DecodeCmd(s)
	if err == nil {
		return Job{Argv: argv}, nil
	}
	b, berr := base64.RawURLEncoding.DecodeString(trimParam(s))
	if berr != nil || len(b) == 0 || b[0] != '{' {
		return Job{}, err
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return Job{}, fmt.Errorf("decode %s: json: %w", CmdParam, err)
	}
	if len(j.Argv) == 0 || j.Argv[0] == "" {
		return Job{}, fmt.Errorf("decode %s: %w", CmdParam, ErrEmptyArgv)
	}
	return j, j.Check()
}

// Check refuses mounts the agent could not make sense of: an empty tag, a
// path that is not absolute and clean, or "/" (that is Root's job).
func (j Job) Check() error {
	for _, m := range j.Mounts {
		if m.Tag == "" || !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" {
			return fmt.Errorf("mount %q at %q: need a tag and a clean absolute path other than /", m.Tag, m.Path)
		}
	}
	if j.Root != nil && j.Root.Tag == "" {
		return fmt.Errorf("root: no tag")
	}
	if j.Dir != "" && (!path.IsAbs(j.Dir) || path.Clean(j.Dir) != j.Dir) {
		return fmt.Errorf("dir %q: need a clean absolute path", j.Dir)
	}
	return nil
}
