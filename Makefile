# The two commands a new user needs (Debian 12, as root); each installs what it needs.
#   make demo   bring up the built-in lab and roll the whole stack onto it
#   make test   every test: lint, sanity, unit, integration, Molecule scenarios
.PHONY: demo test lab-up lab-down bootstrap ee
demo:
	NODES=$(or $(NODES),2) RELEASES=$(or $(RELEASES),trixie) bash tools/demo.sh
test:
	bash tools/test.sh
# NODES=N hypervisors (default 2): make lab-up NODES=8; RELEASES=bookworm,trixie (default trixie)
lab-up:
	NODES=$(or $(NODES),2) RELEASES=$(or $(RELEASES),trixie) bash tools/lab.sh up
lab-down:
	bash tools/lab.sh down
bootstrap:
	bash tools/bootstrap.sh test
# The execution environment test (tools/ee.py, DEVELOPMENT.md; heavy, not part of make test): build the
# EE image (kept as a cache keyed by its inputs), a lab, site.yml and console.yml from inside the EE,
# the .vv opened in remote-viewer, site.yml again with changed=0, the lab removed.
ee:
	bash tools/bootstrap.sh lab
	bash -c '. tools/env.sh && exec python3 tools/ee.py'
