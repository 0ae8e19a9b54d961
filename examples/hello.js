console.log(`Hello from runbox, in JavaScript (Node.js ${process.versions.node})`);
