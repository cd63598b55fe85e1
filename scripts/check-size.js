#!/usr/bin/env node
// Lists the TypeScript files over the project's size limits: files over 400 lines, and
// functions, methods, constructors, accessors and arrow functions over 80 lines (counted
// from the first line of the declaration to its closing brace; leading comments excluded).
//
//   node scripts/check-size.js                 # src/
//   node scripts/check-size.js src ffi test    # any files or directories
//   node scripts/check-size.js --max-file 400 --max-function 80 src
//
// Exits 1 when anything is listed, 0 when everything fits, 2 on a bad command line.
// Parses with the `typescript` package from node_modules; nothing is compiled.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

function usage(message) {
  process.stderr.write(`check-size: ${message}\nusage: node scripts/check-size.js [--max-file N] [--max-function N] [file|dir...]\n`);
  process.exit(2);
}

function parseArguments(argv) {
  const options = { maxFile: 400, maxFunction: 80, roots: [] };
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i];
    if (argument === '--max-file' || argument === '--max-function') {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < 1) usage(`${argument} wants a positive integer`);
      options[argument === '--max-file' ? 'maxFile' : 'maxFunction'] = value;
    } else if (argument === '-h' || argument === '--help') {
      process.stdout.write('usage: node scripts/check-size.js [--max-file N] [--max-function N] [file|dir...]\n');
      process.exit(0);
    } else if (argument.startsWith('-')) {
      usage(`unknown option ${argument}`);
    } else {
      options.roots.push(argument);
    }
  }
  if (options.roots.length === 0) options.roots.push('src');
  return options;
}

/** .ts files below each root (node_modules, dist and dot-directories skipped), sorted. */
function typescriptFiles(roots) {
  const files = [];
  const visit = (entry) => {
    let stat;
    try {
      stat = fs.statSync(entry);
    } catch (error) {
      usage(`cannot read ${entry}: ${error.message}`);
    }
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(entry).sort()) {
        if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
        visit(path.join(entry, name));
      }
    } else if (/\.(ts|tsx|mts|cts)$/.test(entry) && !entry.endsWith('.d.ts')) {
      files.push(entry);
    }
  };
  for (const root of roots) visit(root);
  return files;
}

function lineCount(text) {
  if (text.length === 0) return 0;
  const newlines = text.split('\n').length - 1;
  return text.endsWith('\n') ? newlines : newlines + 1;
}

function isFunctionLike(node) {
  return (
    ts.isFunctionDeclaration(node) ||
    ts.isFunctionExpression(node) ||
    ts.isArrowFunction(node) ||
    ts.isMethodDeclaration(node) ||
    ts.isConstructorDeclaration(node) ||
    ts.isGetAccessorDeclaration(node) ||
    ts.isSetAccessorDeclaration(node)
  );
}

function nameText(name, source) {
  return name ? name.getText(source) : undefined;
}

/** A readable name: the declared one, else what the function is assigned to or passed to. */
function describeFunction(node, source) {
  if (ts.isConstructorDeclaration(node)) return `constructor of ${nameText(node.parent.name, source) ?? 'a class'}`;
  if (node.name) return nameText(node.name, source);
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return nameText(parent.name, source);
  }
  if (ts.isCallExpression(parent)) {
    const callee = ts.isPropertyAccessExpression(parent.expression) ? parent.expression.name : parent.expression;
    return `${ts.isArrowFunction(node) ? 'arrow function' : 'function'} passed to ${callee.getText(source)}()`;
  }
  return ts.isArrowFunction(node) ? 'arrow function' : 'anonymous function';
}

function checkFile(file, options) {
  const text = fs.readFileSync(file, 'utf8');
  const findings = [];
  const lines = lineCount(text);
  if (lines > options.maxFile) findings.push(`${file}: ${lines} lines (over ${options.maxFile})`);
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const visit = (node) => {
    if (isFunctionLike(node) && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line + 1;
      const length = last - first + 1;
      if (length > options.maxFunction) {
        findings.push(`${file}:${first}-${last}: ${describeFunction(node, source)} is ${length} lines (over ${options.maxFunction})`);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return findings;
}

const options = parseArguments(process.argv.slice(2));
const findings = typescriptFiles(options.roots).flatMap((file) => checkFile(file, options));
for (const finding of findings) process.stdout.write(`${finding}\n`);
process.exitCode = findings.length ? 1 : 0;
