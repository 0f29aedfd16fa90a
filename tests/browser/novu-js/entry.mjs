// esbuild bundles this file with @novu/js into dist/novu-js.js, a script that sets `window.NovuJs`
// to {Novu, NovuUI}. NovuUI is the Inbox UI that @novu/react wraps.
// The package's own dist/novu.min.js is not used because in 3.19.2 it still reads the build-time
// global PACKAGE_NAME, so loading it throws "ReferenceError: PACKAGE_NAME is not defined".
export { Novu } from "@novu/js";
export { NovuUI } from "@novu/js/ui";
