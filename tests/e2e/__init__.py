"""End to end: real Envoy, Tomcat, Prometheus and authz processes, the soak, lifecycle, demo
and benchmark smoke tests."""
