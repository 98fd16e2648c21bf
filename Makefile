# The two commands a new user needs (Debian 12, as root); each installs what it needs.
#   make demo   bring up the built-in lab and roll the whole stack onto it
#   make test   every test: lint, sanity, unit, integration, Molecule scenarios
.PHONY: demo test lab-up lab-down bootstrap
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
