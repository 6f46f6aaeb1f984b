// The published `dist/` of @rocket.chat/rest-typings (and core-typings) is ES module syntax with
// extensionless imports (`export * from './v1/permissions'`, `import Ajv from 'ajv/dist/2019'`),
// written for bundlers. Node refuses those, so this hook retries a failed path import as
// `<spec>.js`, then `<spec>/index.js`. It changes where files are found, never what they contain.
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    // A path: relative, or a package subpath such as `ajv/dist/2019` (a scope's own slash aside).
    const path = specifier.startsWith('.') || specifier.replace(/^@[^/]+\//, '').includes('/');
    const retriable = err.code === 'ERR_MODULE_NOT_FOUND' || err.code === 'ERR_UNSUPPORTED_DIR_IMPORT';
    if (!path || !retriable) throw err;
    for (const candidate of [`${specifier}.js`, `${specifier}/index.js`]) {
      try {
        return await nextResolve(candidate, context);
      } catch {
        // try the next form
      }
    }
    throw err;
  }
}
