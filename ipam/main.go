package main

import (
	"fmt"
	"os"

	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/buildinfo"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println(buildinfo.String("podcidr"))
		return
	}
	fmt.Fprintln(os.Stderr, "podcidr: not implemented yet")
	os.Exit(1)
}
