// The route tables of deploy/edge/routes/, checked and written as JSON by
// edge-validator/route-tables during the build (`edgeward-routes` is that generated module,
// bundled by esbuild). Bound in src/driver/js.rs.
import tables from "edgeward-routes";

/** The table named `name`, as JSON text, or undefined when the bundle has none by that name. */
export function routeTable(name) {
  return Object.hasOwn(tables, name) ? tables[name] : undefined;
}
