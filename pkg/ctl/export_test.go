package ctl

// Run is Main with the environment given, so tests keep the process's environment out.
var Run = run
