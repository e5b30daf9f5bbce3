// pause: the sandbox ("infra") container of every pod on the test cluster's
// real node. It holds the pod's namespaces open, reaps zombies (it is PID 1 of
// the pod when the pod shares its process namespace) and exits on SIGINT or
// SIGTERM, like Kubernetes' own pause. Built here because no registry can be
// reached to pull registry.k8s.io/pause; images/build.sh makes the image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("pause: warning: not PID 1\n")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
