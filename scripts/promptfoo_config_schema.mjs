// Print the JSON Schema (draft-07) of promptfoo's configuration file, as the installed promptfoo
// package validates it, for tests/data/promptfoo-config-schema.json:
//
//   npm install --prefix /tmp/pf promptfoo@0.123.1     (promptfoo needs Node.js 22.22 or later)
//   node scripts/promptfoo_config_schema.mjs /tmp/pf/node_modules/promptfoo > tests/data/promptfoo-config-schema.json
//
// The package ships its schema as zod code, not as a JSON file; zod (a dependency of promptfoo)
// converts it. The configuration is described as written (zod's "input" side), before promptfoo
// normalises it; what JSON Schema cannot say (functions, custom checks) is left open.
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const pkg = path.resolve(process.argv[2] ?? "node_modules/promptfoo");
const require = createRequire(path.join(pkg, "package.json"));
const { version } = require(path.join(pkg, "package.json"));
const { UnifiedConfigSchema } = await import(pathToFileURL(path.join(pkg, "dist/src/index.js")).href);
const { z } = await import(pathToFileURL(require.resolve("zod")).href);
const written = UnifiedConfigSchema._def.in ?? UnifiedConfigSchema; // before the normalising transform
const { $schema, ...schema } = z.toJSONSchema(written, { unrepresentable: "any", io: "input", target: "draft-7" });
process.stdout.write(JSON.stringify({ $schema: "http://json-schema.org/draft-07/schema#",
                                      title: `promptfoo ${version} configuration`, ...schema }) + "\n");
