<%--
  The servlet behind every mapping of tests/tomcat.py's webapps: answers 200 with a JSON
  object of what Tomcat handed it. isErrorPage="true" makes Jasper skip its GET/POST/HEAD
  check, so PUT, DELETE, OPTIONS ... reach it too, as they reach Ant Media's REST servlet.
  A request for a file that exists in the webapp (a test put it there, e.g. HLS files under
  streams/) goes to Tomcat's DefaultServlet instead, which serves it as Ant Media serves its
  stream files.
--%><%@ page contentType="application/json; charset=UTF-8" session="false"
    isErrorPage="true" trimDirectiveWhitespaces="true"
    import="java.util.Enumeration" %><%!
  // A JSON string (or null); everything outside printable ASCII escaped.
  private static String q(String s) {
    if (s == null) {
      return "null";
    }
    StringBuilder b = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20 || c > 0x7e) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }
%><%
  String within = request.getServletPath()
      + (request.getPathInfo() == null ? "" : request.getPathInfo());
  String file = application.getRealPath(within);
  if (file != null && new java.io.File(file).isFile()) {
    response.reset();  // the page directive set a JSON content type and charset
    application.getNamedDispatcher("default").forward(request, response);
    return;
  }
  // Every header value as a [name, value] pair, in the order Tomcat lists them. The Servlet
  // API gives each name once (its first spelling) with all of its values.
  StringBuilder headers = new StringBuilder("[");
  for (Enumeration<String> names = request.getHeaderNames(); names.hasMoreElements();) {
    String name = names.nextElement();
    for (Enumeration<String> values = request.getHeaders(name); values.hasMoreElements();) {
      if (headers.length() > 1) {
        headers.append(',');
      }
      headers.append('[').append(q(name)).append(',').append(q(values.nextElement()))
          .append(']');
    }
  }
  headers.append(']');
  jakarta.servlet.http.HttpServletMapping mapping = request.getHttpServletMapping();
  out.write("{\"servlet\":" + q(config.getServletName())
      + ",\"context\":" + q(application.getContextPath())
      + ",\"contextPath\":" + q(request.getContextPath())
      + ",\"servletPath\":" + q(request.getServletPath())
      + ",\"pathInfo\":" + q(request.getPathInfo())
      + ",\"requestURI\":" + q(request.getRequestURI())
      + ",\"queryString\":" + q(request.getQueryString())
      + ",\"method\":" + q(request.getMethod())
      + ",\"pattern\":" + q(mapping.getPattern())
      + ",\"headers\":" + headers + "}");
%>
