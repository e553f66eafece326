# client_side/ runs in the client venv (`make test-clients`), against repos that tests/clients/publish_repos.py
# publishes first; the project's own test run must not collect it.
collect_ignore = ["client_side"]
