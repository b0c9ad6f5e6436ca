/** Checks for the admin API's request fields; each failure is a 400 naming the field. */
import { MAX_MEMO_CHARS, MAX_PAGE_SIZE, normalizeDomain } from "../../db/mod.ts";
import { badRequest } from "./errors.ts";

const MAX_API_KEY_CHARS = 512;

/** A required domain field, normalized (lowercase, punycode). */
export function domainField(value: unknown, name = "domain"): string {
  if (value === undefined || value === null || value === "") {
    throw badRequest(`missing field "${name}"`);
  }
  if (typeof value !== "string") throw badRequest(`field "${name}" must be a string`);
  return normalizeDomain(value); // InvalidDomainError → 400
}

/** An optional memo (default ""). */
export function memoField(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") throw badRequest(`field "memo" must be a string`);
  if (value.length > MAX_MEMO_CHARS) {
    throw badRequest(`field "memo" is longer than ${MAX_MEMO_CHARS} characters`);
  }
  return value;
}

/** A required client API key (never echoed back in an error). */
export function apiKeyField(value: unknown): string {
  if (value === undefined || value === null || value === "") {
    throw badRequest(`missing field "client_api_key"`);
  }
  if (typeof value !== "string" || value.length > MAX_API_KEY_CHARS) {
    throw badRequest(`field "client_api_key" must be a string of at most ${MAX_API_KEY_CHARS}`);
  }
  return value;
}

/** `?limit=`: 1..MAX_PAGE_SIZE, default `fallback`. */
export function limitParam(value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > MAX_PAGE_SIZE) {
    throw badRequest(`query parameter "limit" must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  }
  return Number(value);
}
