// /api/docs: Swagger UI from the vendored swagger-ui-dist, reading the schema from this host.
// No inline script (the portal's CSP forbids it), no validator badge (it calls swagger.io).
window.SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
});
