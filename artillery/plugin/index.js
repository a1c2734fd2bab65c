'use strict';
// Artillery loads plugins as `artillery-plugin-<name>` from node_modules; package.json links this
// directory there (file:plugin). The code lives in ../processor.js, next to the flow functions.
module.exports = require('../processor.js');
