"""`ltbench doctor`: what this machine is and what ltbench will do on it; `--self-test` runs
every code path the machine supports against its reference (`ltbench.doctor.selftest`)."""
