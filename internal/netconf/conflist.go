package netconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// FromConflist is the configuration a runtime hands to the first plugin of
// type typ in a conflist: that plugin's entry with the list's name and
// cniVersion added, as libcni does.
func FromConflist(conflist []byte, typ string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(conflist))
	dec.UseNumber()
	var list struct {
		Name       string           `json:"name"`
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("failed to parse the conflist: %w", err)
	}
	if list.Name == "" {
		return nil, errors.New("invalid conflist: no name")
	}
	for _, p := range list.Plugins {
		if p["type"] != typ {
			continue
		}
		p["name"], p["cniVersion"] = list.Name, list.CNIVersion
		return json.Marshal(p)
	}
	return nil, fmt.Errorf("invalid conflist: no plugin of type %q", typ)
}
