# `make demo` and `make test` set everything up on first use: only python3 is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := .demo
# A demo never picks up the caller's MAILER_* settings.
CLEAN_ENV := env -u MAILER_DATABASE_URL -u MAILER_SMTP_URL -u MAILER_SECRET_KEY \
	-u MAILER_SECRET_KEY_OLD -u MAILER_DKIM_KEY -u MAILER_LOG_FORMAT -u MAILER_WORKSPACE
MAILER := $(CLEAN_ENV) $(abspath $(BIN))/mailer --workspace $(abspath $(DEMO))
COPY := $(CLEAN_ENV) $(abspath $(BIN))/mailer --workspace $(abspath $(DEMO))/copy
DEMO_NOW := 2026-11-23T10:00
# A regular whose card has something to show (stage, predictions, recommendations, mails).
DEMO_CUSTOMER := chloe.garcia7@example.com
# The readers open, click and answer after the last sweep; the alert and the card come later.
DEMO_READING := 2026-12-01T11:00
DEMO_LATER := 2026-12-01T12:00
# A week of the daemon, one sweep at a time: Monday (birthdays, the big-spender thanks),
# Tuesday evening (feedback ten days after an order), Wednesday (win-back), Black Friday,
# its last-hours reminder on Saturday evening and, next morning, the reminders that quiet
# hours held overnight; the first of December (newsletter, referral, Cyber Monday held
# back by the promotions cap for those Black Friday mailed twice). Holiday greetings on
# Monday (Japan's Labor Thanksgiving), Tuesday (India's Guru Nanak's Birthday) and at
# Thursday's sweep (the US Thanksgiving).
DEMO_SWEEPS := 2026-11-23T11:00 2026-11-24T18:05 2026-11-25T10:00 2026-11-26T18:00 \
	2026-11-27T10:00 2026-11-28T20:05 2026-11-29T07:30 2026-12-01T10:00

.PHONY: demo console test test-fast lint bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check mailer tests bench scripts
	$(BIN)/mypy mailer

# pytest exits 5 when it collected no test: that is a failure here, not a pass. Two
# workers per core (xdist; each has its own PostgreSQL scratch database): much of the
# suite waits on daemons, servers and subprocesses (a fresh clone on 2 cores: 1,206 tests
# in 320 s with four workers; 1,002 took 304 s with two). loadgroup keeps a module that
# builds one store for all its tests (tests/test_console.py) on one worker a database
# (tests/conftest.py names the groups: xdist 3.8 alone no longer does on pytest 9).
# 1,483 tests on the shared 2-core machine with others' work beside them: 836 s and 730 s
# of CPU (user+sys) before the changes README's "Tests" lists, 877 s and 500 s of CPU
# after, at load average 10 instead of 8 (two cores need at least CPU/2 of wall clock:
# 365 s before, 250 s after, PostgreSQL's own work aside). Quiet, a fresh clone: 1,506
# tests in 311 s with four workers, 332 s with six.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
# Bytecode compiled once up front: the suite and the demo start hundreds of `mailer`
# processes, and where PYTHONDONTWRITEBYTECODE is set (this CI machine) each would compile
# every module it imports again (~0.1-0.5 s of CPU a start).
COMPILE := $(BIN)/python -m compileall -q mailer tests scripts

test: lint
	@$(COMPILE)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

# The pure unit tests only (tests/conftest.py marks them): no database, server or
# subprocess, for the edit loop. `make test` stays the CI command and runs everything.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m unit; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

demo: $(STAMP)
	@$(COMPILE)
	@rm -rf $(DEMO)
	@echo "== a fresh workspace in $(DEMO)/"
	@$(CLEAN_ENV) $(BIN)/mailer init $(DEMO)
	@$(MAILER) validate
	@echo "== a synthetic store of 500 customers"
	@$(MAILER) demo-data --customers 500 --seed 7 --now $(DEMO_NOW)
	@echo "== the same store exported as CSV and imported into a second workspace"
	@$(MAILER) demo-data --customers 500 --seed 7 --now $(DEMO_NOW) --out $(DEMO)/export
	@$(CLEAN_ENV) $(BIN)/mailer init $(DEMO)/copy >/dev/null
	@$(COPY) import customers $(DEMO)/export/customers.csv --now $(DEMO_NOW)
	@$(COPY) import orders $(DEMO)/export/orders.csv --now $(DEMO_NOW)
	@# the store's counts, not the ledger's: demo-data also writes the long-silent
	@# reader's past newsletters, which no CSV carries
	@$(MAILER) status --json | $(BIN)/python scripts/store_counts.py > $(DEMO)/status-original.json
	@$(COPY) status --json | $(BIN)/python scripts/store_counts.py > $(DEMO)/status-copy.json
	@cmp -s $(DEMO)/status-original.json $(DEMO)/status-copy.json \
		&& echo "round trip: both workspaces hold the same counts" \
		|| { echo "round trip: the counts differ"; exit 1; }
	@echo "== the example segments as of $(DEMO_NOW), and where the win-back audience goes"
	@$(MAILER) segments list --now $(DEMO_NOW)
	@$(MAILER) segments funnel loyal-drifting --now $(DEMO_NOW)
	@echo "== knowing the customer: the month's stage flow, the purchase models, recommendations"
	@$(MAILER) stages show --month 2026-11 --now $(DEMO_NOW)
	@$(MAILER) predict --now $(DEMO_NOW)
	@$(MAILER) recommend --now $(DEMO_NOW)
	@echo "== previews of every example campaign (nothing is sent)"
	@for campaign in $$(ls campaigns | sed -n 's/\.yaml$$//p'); do \
		$(MAILER) preview $$campaign --sample 3 --now $(DEMO_NOW) --out $(abspath $(DEMO))/previews/$$campaign > /dev/null || exit 1; \
		echo "  $(DEMO)/previews/$$campaign/index.html"; \
	done
	@$(MAILER) preview black-friday --sample 4 --now $(DEMO_NOW)
	@echo "== the next 30 days, simulated hour by hour on a scratch ledger"
	@$(MAILER) forecast --days 30 --from $(DEMO_NOW) --chart $(abspath $(DEMO))/forecast.html
	@echo "== a week of the daemon (mailer run --once at each moment) into a local SMTP sink"
	@$(CLEAN_ENV) $(abspath $(BIN))/mailer sink --port 0 --maildir $(abspath $(DEMO))/outbox \
		> $(DEMO)/sink.log 2>&1 & echo $$! > $(DEMO)/sink.pid
	@for i in $$(seq 1 100); do grep -qs "^listening on" $(DEMO)/sink.log && break; sleep 0.1; done
	@port=$$(sed -n 's/^listening on .*://p' $(DEMO)/sink.log); \
	for when in $(DEMO_SWEEPS); do \
		$(CLEAN_ENV) MAILER_SECRET_KEY=demo-only-secret MAILER_SMTP_URL=smtp://127.0.0.1:$$port \
			$(abspath $(BIN))/mailer --workspace $(abspath $(DEMO)) run --once --now $$when \
			|| { kill $$(cat $(DEMO)/sink.pid); exit 1; }; \
	done
	@echo "the sink caught $$(ls $(DEMO)/outbox/new | wc -l) mails: $(DEMO)/outbox/new/ (one line each in $(DEMO)/sink.log)"
	@echo "== readers at work on $(DEMO_READING): mailer serve on a free port, an open, a click, survey answers, a one-click unsubscribe"
	@$(CLEAN_ENV) MAILER_SECRET_KEY=demo-only-secret $(abspath $(BIN))/mailer --workspace $(abspath $(DEMO)) \
		serve --port 0 --now $(DEMO_READING) > $(DEMO)/serve.log 2>&1 & echo $$! > $(DEMO)/serve.pid
	@for i in $$(seq 1 100); do grep -qs "^listening on" $(DEMO)/serve.log && break; sleep 0.1; done
	@port=$$(sed -n 's/^listening on .*://p' $(DEMO)/serve.log); \
	$(BIN)/python scripts/demo_readers.py $(DEMO)/outbox $$port \
		|| { kill $$(cat $(DEMO)/serve.pid) $$(cat $(DEMO)/sink.pid); exit 1; }
	@pid=$$(cat $(DEMO)/serve.pid); kill $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.1; done
	@echo "== a day of the shop through its Shopify webhooks on mailer serve (each delivery sent twice: the platforms retry)"
	@$(CLEAN_ENV) MAILER_SECRET_KEY=demo-only-secret MAILER_SHOPIFY_SECRET=demo-shopify MAILER_EVENTS_SECRET=demo-events \
		$(abspath $(BIN))/mailer --workspace $(abspath $(DEMO)) serve --port 0 --now $(DEMO_LATER) \
		> $(DEMO)/hooks.log 2>&1 & echo $$! > $(DEMO)/hooks.pid
	@for i in $$(seq 1 100); do grep -qs "^listening on" $(DEMO)/hooks.log && break; sleep 0.1; done
	@port=$$(sed -n 's/^listening on .*://p' $(DEMO)/hooks.log); \
	$(BIN)/python scripts/demo_hooks.py $$port demo-shopify demo-events \
		|| { kill $$(cat $(DEMO)/hooks.pid) $$(cat $(DEMO)/sink.pid); exit 1; }
	@pid=$$(cat $(DEMO)/hooks.pid); kill $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.1; done
	@echo "== the low score's alert, the webhooks' welcomes, the cart left behind and the boots back in stock go out with the next run (the alert a notice: no caps, no unsubscribe footer)"
	@port=$$(sed -n 's/^listening on .*://p' $(DEMO)/sink.log); \
	$(CLEAN_ENV) MAILER_SECRET_KEY=demo-only-secret MAILER_SMTP_URL=smtp://127.0.0.1:$$port \
		$(abspath $(BIN))/mailer --workspace $(abspath $(DEMO)) run --once --now $(DEMO_LATER) > /dev/null \
		|| { kill $$(cat $(DEMO)/sink.pid); exit 1; }
	@kill $$(cat $(DEMO)/sink.pid)
	@grep -- "-> care@shop.example | Low score" $(DEMO)/sink.log | sed 's/^/  in the sink: /' \
		|| { echo "no alert reached the sink"; exit 1; }
	@grep -E -- "\| (Welcome to Pine|.*left something in your cart)" $(DEMO)/sink.log | sed 's/^/  in the sink: /' \
		|| { echo "no welcome or cart mail reached the sink"; exit 1; }
	@grep -- "| .* is back in stock" $(DEMO)/sink.log | sed 's/^/  in the sink: /' \
		|| { echo "no back-in-stock mail reached the sink"; exit 1; }
	@echo "== what the survey heard, and the month's review for the owner (the month so far)"
	@$(MAILER) responses feedback
	@$(MAILER) review --month 2026-12 --now $(DEMO_LATER) --out $(abspath $(DEMO))/review.html > /dev/null && echo "review: $(DEMO)/review.html"
	@$(MAILER) report black-friday --chart $(abspath $(DEMO))/black-friday.html
	@$(MAILER) report feedback --chart $(abspath $(DEMO))/feedback.html > /dev/null && echo "chart: $(DEMO)/feedback.html"
	@echo "== one customer's card after the week"
	@$(MAILER) customer $(DEMO_CUSTOMER) --now $(DEMO_LATER)
	@echo "== an opt-out, then the store's status"
	@$(MAILER) unsubscribe someone@example.com
	@$(MAILER) status
	@echo "== the console: \`make console\`, then open http://127.0.0.1:$(CONSOLE_PORT)/ as $(CONSOLE_USER), password $(CONSOLE_PASSWORD)"

# The console on the demo workspace as of the demo's last moment (run `make demo` first).
# Its one user is $(CONSOLE_USER) with a demo password, hashed here (a real console takes
# MAILER_CONSOLE_USERS; set it to use your own users instead). Ctrl-C stops it.
CONSOLE_PORT ?= 8090
CONSOLE_USER := demo
CONSOLE_PASSWORD := demo-console
console: $(STAMP)
	@test -f $(DEMO)/mailer.yaml || { echo "no demo workspace: run \`make demo\` first"; exit 1; }
	@hash=$$(echo $(CONSOLE_PASSWORD) | $(BIN)/mailer console hash-password) || exit 1; \
	echo "log in as $(CONSOLE_USER), password $(CONSOLE_PASSWORD), at http://127.0.0.1:$(CONSOLE_PORT)/"; \
	$(CLEAN_ENV) MAILER_SECRET_KEY=demo-only-secret \
		MAILER_CONSOLE_USERS="$${MAILER_CONSOLE_USERS:-$(CONSOLE_USER):$$hash}" \
		$(abspath $(BIN))/mailer --workspace $(abspath $(DEMO)) console --port $(CONSOLE_PORT) \
		--now $(DEMO_LATER) --outbox $(abspath $(DEMO))/outbox

# PostgreSQL figures need BENCH_POSTGRES_URL (an empty database; it is emptied again).
bench: $(STAMP)
	$(BIN)/python bench/import.py
	$(BIN)/python bench/segments.py
	@if [ -n "$$BENCH_POSTGRES_URL" ]; then $(BIN)/python bench/segments.py --database-url "$$BENCH_POSTGRES_URL"; fi
	$(BIN)/python bench/render.py
	$(BIN)/python bench/batch_reads.py
	@if [ -n "$$BENCH_POSTGRES_URL" ]; then $(BIN)/python bench/batch_reads.py --database-url "$$BENCH_POSTGRES_URL"; fi
	$(BIN)/python bench/deliver.py $${BENCH_POSTGRES_URL:+--database-url "$$BENCH_POSTGRES_URL"}
	$(BIN)/python bench/serve.py
	@if [ -n "$$BENCH_POSTGRES_URL" ]; then $(BIN)/python bench/serve.py --database-url "$$BENCH_POSTGRES_URL"; fi

soak: $(STAMP)
	$(BIN)/python bench/daemon_soak.py
	$(BIN)/python bench/deliver.py --recipients 1000000 --mailer-only
	@if [ -n "$$BENCH_POSTGRES_URL" ]; then $(BIN)/python bench/deliver.py --recipients 1000000 --mailer-only --database-url "$$BENCH_POSTGRES_URL"; fi
	$(BIN)/python bench/import.py --customers 1000000
	$(BIN)/python bench/segments.py --customers 1000000 --orders 10000000
	@if [ -n "$$BENCH_POSTGRES_URL" ]; then $(BIN)/python bench/segments.py --customers 1000000 --orders 10000000 --database-url "$$BENCH_POSTGRES_URL"; fi

clean:
	rm -rf $(DEMO) bench/.data
