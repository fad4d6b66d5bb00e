pytest_plugins = ["tests.fakes.googlevideo", "tests.mpd_harness", "tests.proxy_fixture"]
